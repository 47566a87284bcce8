"""Fused pass vs the chained pass, on the same photos with the same models.

    python bench/fused_vs_chained.py [--photos 8] [--donors DIR]

Prints, from one run (dlib detector, CPU unless --device says otherwise):
- seconds per photo for each and their ratio, with the real CodeFormer and BiSeNet
  architectures (random weights) and a pass-through swapper: a random-weight GHOST paints
  noise that the chained pass's second detection cannot find, and a pass that skips the
  restorer is not a fair timing; the swap itself costs the same in both passes;
- how many faces the chained pass loses at re-detection with the real random-weight GHOST;
- the resampling depth of the face pixels in each;
- with pass-through swap and restore models, the PSNR of the face region against the
  original photo, which measures the blur the extra warps add.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chained import ChainedPass
from bench.identity_models import IdentityRestorer, IdentitySwapper, face_region, fixed_source, psnr
from builder.config import Config, SwapConfig
from builder.device import resolve_device
from builder.faces.detect import make_detector
from builder.io import list_images, load_image
from builder.swap.fused import FaceJob, FusedPass
from builder.swap.parsing import load_parser
from builder.swap.restorers import load_restorer
from builder.swap.source import SourceIdentity
from builder.swap.swappers import load_swapper

DONORS = Path(__file__).resolve().parents[2] / "shared" / "data" / "donors"


def jobs_for(paths: list[Path], detector) -> list[FaceJob]:
    jobs = []
    for p in paths:
        image = load_image(p)
        faces = detector.detect(image)
        if faces:
            jobs.append(FaceJob(image, faces[0]))
    return jobs


def timed(fn, jobs: list[FaceJob], identity: SourceIdentity) -> tuple[float, list]:
    start = time.perf_counter()
    out = [fn([j], identity)[0] for j in jobs]
    return (time.perf_counter() - start) / max(len(jobs), 1), out


def timed_pair(a, b, jobs: list[FaceJob], identity: SourceIdentity) -> tuple[float, float, list]:
    """Seconds per photo of a and b, alternating photo by photo so a change in machine load
    during the run weighs on both alike."""
    ta = tb = 0.0
    out_b = []
    for j in jobs:
        t0 = time.perf_counter()
        a([j], identity)
        t1 = time.perf_counter()
        out_b.append(b([j], identity)[0])
        ta, tb = ta + t1 - t0, tb + time.perf_counter() - t1
    n = max(len(jobs), 1)
    return ta / n, tb / n, out_b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--donors", type=Path, default=DONORS)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    cfg = Config()
    cfg.faces.detector = cfg.faces.judge = "dlib"
    cfg.runtime.random_weights = True
    cfg.runtime.device = args.device
    detector = make_detector(cfg)
    jobs = jobs_for(list_images(args.donors)[: args.photos], detector)
    print(f"{len(jobs)} photos with a face from {args.donors}")

    # 1. Geometry only: identity models, box paste mask, no mouth transplant.
    plain = SwapConfig(mouth=False, paste_mask="box", restorer="none")
    fused = FusedPass(IdentitySwapper(), IdentityRestorer(), None, plain)
    chained = ChainedPass(fused, detector)
    ones = fixed_source(fused, np.ones(512, np.float32))
    _, fused_out = timed(fused.run, jobs, ones)
    _, chained_out = timed(chained.run, jobs, ones)
    fused_psnr, chained_psnr = [], []
    for job, f, c in zip(jobs, fused_out, chained_out, strict=True):
        region = face_region(job.image, job.face.box)
        fused_psnr.append(psnr(f.image[region], job.image[region]))
        if c is not None:
            chained_psnr.append(psnr(c[region], job.image[region]))
    lost = sum(c is None for c in chained_out)

    # 2. Speed: the real restorer and parser (random weights), the same for both passes.
    device = resolve_device(cfg.runtime.device)
    restorer, parser = load_restorer(cfg, device), load_parser(cfg, device)
    timing = FusedPass(IdentitySwapper(), restorer, parser, cfg.swap)
    identity = fixed_source(timing, np.random.default_rng(0).standard_normal(512).astype(np.float32))
    timing.run(jobs[:1], identity)  # warm-up: first-call allocations are not the pipeline's cost
    t_fused, t_chained, timed_out = timed_pair(timing.run, ChainedPass(timing, detector).run, jobs, identity)
    timed_lost = sum(c is None for c in timed_out)

    # 3. The real random-weight GHOST: what the chained pass's second detection makes of it.
    ghost = FusedPass(load_swapper(cfg, device), restorer, parser, cfg.swap)
    identity = fixed_source(ghost, identity.vector)
    t_ghost, _ = timed(ghost.run, jobs, identity)
    ghost_lost = sum(c is None for c in ChainedPass(ghost, detector).run(jobs, identity))

    print(f"device: {device}; restorer {cfg.swap.restorer}, parser {cfg.swap.parser}, generator {cfg.swap.generator}")
    print(f"{'':34}{'fused':>10}{'chained':>10}{'ratio':>10}")
    print(f"{'seconds per photo (pass-through swap)':34}{t_fused:10.3f}{t_chained:10.3f}{t_chained / t_fused:10.2f}x")
    print(f"{'resampling depth (face)':34}{FusedPass.resamplings:10d}{ChainedPass.resamplings:10d}")
    print(
        f"{'face PSNR vs original, dB':34}{np.mean(fused_psnr):10.2f}{np.mean(chained_psnr):10.2f}"
        f"{np.mean(fused_psnr) - np.mean(chained_psnr):+10.2f}"
    )
    print(f"faces lost at re-detection (chained): {lost} with pass-through models, {timed_lost} in the timing run, "
          f"{ghost_lost} of {len(jobs)} with random-weight GHOST")
    print(f"fused pass with random-weight GHOST: {t_ghost:.3f} s per photo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
