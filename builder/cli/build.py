"""`launch.py build`: donor photos + source face -> captioned kohya image folder, TOMLs, manifest."""

from __future__ import annotations

import argparse

from builder.cli.common import build_config
from builder.console import random_weights_banner
from builder.pipeline import run_stages


def add_build_flags(p: argparse.ArgumentParser) -> None:
    """The flags `build` and `run` share."""
    S = argparse.SUPPRESS
    p.add_argument("--source", dest="paths.source", nargs="+", default=S, metavar="PATH", help="source photo(s) or folder of the new face")
    p.add_argument("--donors", dest="paths.donors", default=S, metavar="DIR", help="folder of donor photos")
    p.add_argument("--out", dest="paths.out", default=S, metavar="DIR", help="run folder")
    p.add_argument("--trigger", dest="character.trigger", default=S, help="trigger word (e.g. ohwx)")
    p.add_argument("--class-word", dest="character.class_word", default=S, help="class word (e.g. woman)")
    p.add_argument("--detector", dest="faces.detector", default=S, choices=["insightface", "dlib"])
    p.add_argument("--judge", dest="faces.judge", default=S, choices=["insightface", "dlib"], help="recognition net that scores identity")
    p.add_argument("--donor-face", dest="faces.donor_face", default=S, choices=["largest", "consistent"])
    p.add_argument("--generator", dest="swap.generator", default=S, choices=["G_unet_1block", "G_unet_2blocks", "G_unet_3blocks"])
    p.add_argument("--restorer", dest="swap.restorer", default=S, choices=["codeformer", "gfpgan", "none"])
    p.add_argument("--codeformer-w", dest="swap.codeformer_w", type=float, default=S, help="CodeFormer fidelity (0 = quality, 1 = fidelity)")
    p.add_argument("--mouth", dest="swap.mouth", action=argparse.BooleanOptionalAction, default=S, help="put the donor's own mouth back (default on)")
    p.add_argument("--batch-size", dest="swap.batch_size", type=int, default=S, help="faces per model batch")
    p.add_argument("--keep", dest="quality.keep", type=int, default=S, metavar="N", help="keep only the best N results")
    p.add_argument("--caption-backend", dest="caption.backend", default=S, choices=["blip", "lavis", "none"], help="none: captions are just trigger and class")
    p.add_argument("--reg", dest="paths.reg", default=S, metavar="DIR", help="regularisation images")
    p.add_argument("--base-model", dest="paths.base_model", default=S, metavar="FILE", help="SD 1.5 .safetensors/.ckpt or diffusers folder")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "build",
        help="swap, restore, filter and caption the donor photos into a kohya training folder",
        description="Swap the source face onto every donor photo (detect once, one fused "
        "swap/mouth/restore/paste pass), score and filter the results, caption the kept ones "
        "and write the kohya folder, TOMLs and manifest. Re-running resumes.",
    )
    add_build_flags(p)
    return p


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if cfg.runtime.random_weights:
        random_weights_banner()
    run_stages(cfg, until="caption")
    return 0
