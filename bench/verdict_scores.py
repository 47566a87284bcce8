"""What the verdict scores add to the sample stage: donor leakage and CLIP prompt adherence.

One `sample` run over LoRA epochs of a base model (default: the tests' tiny random SD 1.5;
pass --base-model for a real one, ideally on a GPU with --size 512 --steps 25), scored with
the real dlib report judge against the shared source and donor photos, and CLIP ViT-B/32 at
its real size (random weights unless the registry file is cached). Prints the stage's seconds
per sample, the new scores' seconds per sample (adherence per image, plus the one-off donor
identity and CLIP load spread over the samples) and their share of the stage.

    .venv/bin/python -m bench.verdict_scores [--epochs 2] [--seeds 2] [--device cpu]
    .venv/bin/python -m bench.verdict_scores --random-sd15 --size 256 --steps 10 --epochs 1   # real-size UNet
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from builder.config import Config
from builder.device import resolve_device
from builder.sample import run_samples
from builder.sample.adherence import WEIGHT, ClipAdherence
from builder.sample.pipeline import load_pipeline, resolve_base_model
from builder.weights import MISSING, state
from tests.conftest import DATA
from tests.fixtures.tiny_sd import save_tiny_pipeline, write_kohya_lora


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-model", default="", help="diffusers folder or file (default: a tiny random SD 1.5)")
    ap.add_argument("--random-sd15", action="store_true", help="SD 1.5's real sizes, random weights (2 GB, generated)")
    ap.add_argument("--epochs", type=int, default=2, help="LoRA files to sample besides the base model")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = Config()
        if args.random_sd15:
            from builder.families.sd15 import make_random_base

            cfg.paths.base_model = str(make_random_base(str(root / "weights"), 0))
        else:
            cfg.paths.base_model = args.base_model or str(save_tiny_pipeline(root / "tiny-sd15"))
        cfg.paths.source = [str(DATA / "source")]
        cfg.paths.donors = str(DATA / "donors")
        cfg.faces.detector = cfg.faces.judge = "dlib"
        cfg.runtime.device = args.device
        cfg.runtime.random_weights = state(WEIGHT).state == MISSING  # CLIP only: the base is given
        cfg.sample.seeds = list(range(1, args.seeds + 1))
        cfg.sample.width = cfg.sample.height = args.size
        cfg.sample.steps = args.steps
        device = resolve_device(args.device)
        pipe = load_pipeline(resolve_base_model(cfg), cfg, device)
        out = root / "run"
        for epoch in range(1, args.epochs + 1):
            write_kohya_lora(pipe.unet, pipe.text_encoder, out / "model" / f"ohwx-{epoch:06d}.safetensors", seed=epoch)
        del pipe
        start = time.perf_counter()
        adherence = ClipAdherence.load(cfg, str(device))
        load = time.perf_counter() - start
        result = run_samples(cfg, out, adherence=adherence)
        total = time.perf_counter() - start
    samples = sum(s.images for s in result.summaries.values())
    seconds = result.score_seconds or {}
    donor_once = seconds.get("donor_identity", 0.0)
    new = seconds.get("adherence", 0.0) + load + donor_once
    print(f"{samples} samples ({args.epochs} epochs + base, {args.size} px, {args.steps} steps) on {device}")
    print(f"sample stage: {total / samples:.3f} s/sample ({total:.1f} s)")
    print(
        f"new scores: {new / samples:.3f} s/sample (adherence {seconds.get('adherence', 0.0) / samples:.3f} s/sample, "
        f"CLIP load {load:.1f} s and donor identity {donor_once:.1f} s once)"
    )
    print(f"identity scoring (report judge, as before): {seconds.get('identity', 0.0) / samples:.3f} s/sample")
    print(f"share of the sample stage: {new / total:.2f}")


if __name__ == "__main__":
    main()
