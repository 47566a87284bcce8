"""``launch.py caption DIR``: caption or re-caption an image folder or a kohya dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.caption.recaption import recaption
from builder.cli.common import build_config

FLAG = {"default": argparse.SUPPRESS}


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "caption",
        help="caption a folder or kohya dataset with BLIP, trigger and class word in front",
        description="Caption every image under DIR: a kohya run folder (img/<N>_<trigger> <class>/), "
        "one such folder, or any folder of images (nested folders included). The trigger and class "
        "word come from the kohya folder name unless --trigger/--class-word are given, else from "
        "[character] in the config.",
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder of images or kohya dataset")
    p.add_argument(
        "--mode", dest="caption.mode", choices=["skip", "overwrite", "prefix-only"], **FLAG,
        help="skip: keep existing captions (default); overwrite: caption every image; "
        "prefix-only: put trigger and class in front of existing captions, no model",
    )
    p.add_argument("--extension", dest="caption.extension", choices=[".txt", ".caption"], **FLAG,
                   help="caption file extension (default .txt)")
    p.add_argument("--trigger", dest="character.trigger", metavar="WORD", **FLAG, help="trigger word (overrides the folder name)")
    p.add_argument("--class-word", dest="character.class_word", metavar="WORDS", **FLAG, help="class word (overrides the folder name)")
    p.add_argument("--backend", dest="caption.backend", choices=["blip", "lavis", "none"], **FLAG)
    p.add_argument("--model", dest="caption.model", metavar="NAME", **FLAG,
                   help="blip_large (default), blip_base, a Hugging Face repo id or a local folder")
    p.add_argument("--batch-size", dest="caption.batch_size", type=int, metavar="N", **FLAG)
    p.add_argument("--beams", dest="caption.beams", type=int, metavar="N", **FLAG, help="beam search width")
    p.add_argument("--sampling", dest="caption.sampling", action="store_const", const=True, **FLAG,
                   help="nucleus sampling (--top-p) instead of beam search")
    p.add_argument("--top-p", dest="caption.top_p", type=float, metavar="P", **FLAG)
    p.add_argument("--min-length", dest="caption.min_length", type=int, metavar="N", **FLAG)
    p.add_argument("--max-length", dest="caption.max_length", type=int, metavar="N", **FLAG,
                   help="BLIP caption length in BERT tokens (as kohya's make_captions.py)")
    p.add_argument("--strip", dest="caption.strip_words", **FLAG, metavar="WORDS",
                   help="comma-separated words or phrases to remove from captions")
    p.add_argument("--tags", dest="caption.extra_tags", **FLAG, metavar="TAGS", help="comma-separated tags to append")
    p.add_argument("--max-tokens", dest="caption.max_tokens", type=int, metavar="N", **FLAG,
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
