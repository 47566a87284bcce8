"""Sampler seconds per image: the tiny FLUX.1-dev (the tests' base: the real 3072-wide transformer
with 1 double + 1 single block, the real AE) against the tiny SD 1.5 pipeline of the tests.

Both go through builder.sample.pipeline (load_pipeline, render) at 64 px and the same steps; FLUX
with its family's scheduler, distilled guidance 3.5 and T5 read to 512 tokens, SD with ddim and CFG.
Prints seconds per image for each and the ratio, from one run.

    .venv/bin/python -m bench.sample_flux [--steps 2] [--images 3] [--size 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from builder.config import Config
from builder.device import resolve_device
from builder.sample.pipeline import load_pipeline, render
from builder.sample.prompts import parse_prompt_line
from tests.fixtures.tiny_flux import write_tiny_flux
from tests.fixtures.tiny_sd import save_tiny_pipeline


def seconds_per_image(base: Path, device: torch.device, line: str, images: int) -> float:
    cfg = Config()
    cfg.paths.base_model = str(base)
    pipe = load_pipeline(base, cfg, device)
    prompt = parse_prompt_line(line, cfg)
    scheduler = dict(pipe.scheduler.config)
    render(pipe, prompt, 0, scheduler)  # warm-up
    t = time.perf_counter()
    for seed in range(1, images + 1):
        render(pipe, prompt, seed, scheduler)
    return (time.perf_counter() - t) / images


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = resolve_device(args.device)
    line = f"ohwx woman, portrait --n blurry --w {args.size} --h {args.size} --s {args.steps}"
    with tempfile.TemporaryDirectory(prefix="bench-flux-") as tmp:
        sd = seconds_per_image(save_tiny_pipeline(Path(tmp) / "sd"), device, line, args.images)
        flux = seconds_per_image(write_tiny_flux(Path(tmp) / "flux"), device, line, args.images)
    print(f"{args.size} px, {args.steps} steps, {device}: SD 1.5 tiny {sd:.3f} s/image, FLUX.1-dev tiny "
          f"{flux:.3f} s/image; FLUX/SD x{flux / sd:.1f}")


if __name__ == "__main__":
    main()
