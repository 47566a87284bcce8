"""How much batching buys the BLIP captioner: one call per image vs batch_size images per call.

Runs on a random-weight BLIP of the real class (pass --large for blip-image-captioning-large's
sizes; slow on CPU) with donor photos; prints seconds per image and the ratio.

    .venv/bin/python -m bench.caption_batching [--large] [--images 8] [--batch 8] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2

from builder.caption import blip
from builder.caption.base import load_captioner
from builder.config import Config
from builder.device import resolve_device
from tests.fixtures.blip import small_blip_config

DONORS = Path(__file__).resolve().parents[2] / "shared" / "data" / "donors"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", action="store_true", help="blip-image-captioning-large's sizes")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if not args.large:
        blip.blip_config = lambda model: small_blip_config(image_size=384, patch_size=32)
    cfg = Config()
    cfg.runtime.random_weights = True
    cfg.runtime.device = args.device
    cfg.caption.max_length = 30
    cfg.caption.min_length = 30  # random weights stop at random times; fix the length to compare fairly
    captioner = load_captioner(cfg, resolve_device(args.device))
    paths = sorted(DONORS.iterdir())[: args.images]
    images = [cv2.imread(str(p)) for p in paths]
    captioner.caption(images[:1])  # warm-up

    t = time.perf_counter()
    for im in images:
        captioner.caption([im])
    single = (time.perf_counter() - t) / len(images)
    t = time.perf_counter()
    for start in range(0, len(images), args.batch):
        captioner.caption(images[start : start + args.batch])
    batched = (time.perf_counter() - t) / len(images)
    print(f"one at a time: {single:.3f} s/image; batch {args.batch}: {batched:.3f} s/image; "
          f"speed-up x{single / batched:.2f} ({captioner.device}, {'large' if args.large else 'small'} BLIP)")


if __name__ == "__main__":
    main()
