"""``launch.py caption DIR``: caption or re-caption an image folder or a kohya dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.caption.recaption import recaption
from builder.cli.common import build_config, config_flag


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "caption",
        help="caption a folder or kohya dataset (BLIP, Florence-2, WD14 tags), trigger and class word in front",
        description="Caption every image under DIR: a kohya run folder (img/<N>_<trigger> <class>/), "
        "one such folder, or any folder of images (nested folders included). The trigger and class "
        "word come from the kohya folder name unless --trigger/--class-word are given, else from "
        "[character] in the config.",
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder of images or kohya dataset")
    config_flag(p, "--mode", dest="caption.mode",
                help="skip: keep existing captions (default); overwrite: caption every image; "
                "prefix-only: put trigger and class in front of existing captions, no model")
    config_flag(p, "--extension", dest="caption.extension",
                help="caption file extension (default .txt)")
    config_flag(p, "--trigger", dest="character.trigger", metavar="WORD", help="trigger word (overrides the folder name)")
    config_flag(p, "--class-word", dest="character.class_word", metavar="WORDS", help="class word (overrides the folder name)")
    config_flag(p, "--backend", dest="caption.backend",
                help="sentences (blip, lavis, florence2), WD14 tags (wd14), both (blip+wd14, florence2+wd14), or none")
    config_flag(p, "--model", dest="caption.model", metavar="NAME",
                help="BLIP: blip_large (default), blip_base, a Hugging Face repo id or a local folder")
    config_flag(p, "--florence2-model", dest="caption.florence2_model", metavar="NAME",
                help="florence2_large (default), florence2_base, a repo id or a local folder")
    config_flag(p, "--florence2-task", dest="caption.florence2_task")
    config_flag(p, "--wd14-model", dest="caption.wd14_model", metavar="NAME",
                help="wd14_swinv2 (default), wd14_eva02_large, wd14_vit, a repo id, or a folder with "
                "model.onnx and selected_tags.csv")
    config_flag(p, "--general-threshold", dest="caption.wd14_general_threshold", type=float, metavar="P",
                help="WD14 general tags at or above this score (default 0.35)")
    config_flag(p, "--character-threshold", dest="caption.wd14_character_threshold", type=float, metavar="P",
                help="WD14 character tags at or above this score (default 0.85)")
    config_flag(p, "--no-hair", dest="caption.describe_hair", action="store_const", const=False,
                help="prune hair words and tags too, so the trigger carries the hair as well as the face")
    config_flag(p, "--batch-size", dest="caption.batch_size", type=int, metavar="N")
    config_flag(p, "--beams", dest="caption.beams", type=int, metavar="N", help="beam search width")
    config_flag(p, "--sampling", dest="caption.sampling", action="store_const", const=True,
                help="nucleus sampling (--top-p) instead of beam search")
    config_flag(p, "--top-p", dest="caption.top_p", type=float, metavar="P")
    config_flag(p, "--min-length", dest="caption.min_length", type=int, metavar="N")
    config_flag(p, "--max-length", dest="caption.max_length", type=int, metavar="N",
                help="BLIP caption length in BERT tokens (as kohya's make_captions.py)")
    config_flag(p, "--strip", dest="caption.strip_words", metavar="WORDS",
                help="comma-separated words or phrases to remove from captions")
    config_flag(p, "--tags", dest="caption.extra_tags", metavar="TAGS", help="comma-separated tags to append")
    config_flag(p, "--max-tokens", dest="caption.max_tokens", type=int, metavar="N",
                help="CLIP token budget per caption: 75 (default), or 150/225 to keep long captions")
    return p


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    given = vars(args)
    summary = recaption(
        args.folder,
        cfg,
        trigger=cfg.character.trigger if "character.trigger" in given else None,
        class_word=cfg.character.class_word if "character.class_word" in given else None,
    )
    # Partial success is success: the failures are listed above and a rerun with skip resumes.
    return 1 if summary.failed and summary.done == 0 else 0
