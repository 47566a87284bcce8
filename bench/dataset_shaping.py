"""What close-ups and loss masks add to a build: seconds per photo and their share of the build.

    .venv/bin/python -m bench.dataset_shaping                 # 6 shared donors, CPU, random weights
    .venv/bin/python -m bench.dataset_shaping --photos 12 --device cuda

One build with both on. The manifest times each photo's steps; "mask" (segmenter + composing the
mask of the result) and "closeup" (cutting, scoring and masking the close-up) are the added
work, divided by the build's wall time (model loading excluded). The MODNet stand-in is a few
convolutions at MODNet's 512 px input, so the mask time is the pre/post-processing and the mask
composition plus a tiny graph: a lower bound of the published model's cost.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from builder.build import load_models, run_build
from builder.config import Config
from tests.conftest import DATA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shaping-") as tmp:
        donors = Path(tmp) / "donors"
        donors.mkdir()
        for photo in sorted((DATA / "donors").iterdir())[: args.photos]:
            shutil.copy(photo, donors / photo.name)
        cfg = Config()
        cfg.paths.donors, cfg.paths.out = str(donors), str(Path(tmp) / "run")
        cfg.paths.source = [str(DATA / "source" / "5-10.png")]
        cfg.runtime.random_weights, cfg.runtime.device = True, args.device
        cfg.faces.detector = cfg.faces.judge = "dlib"
        cfg.caption.backend = "none"
        models = load_models(cfg)
        start = time.perf_counter()
        summary = run_build(cfg, models)
        wall = time.perf_counter() - start
    photos = [r for r in summary.records if not r.parent and r.output]
    added = sum(r.timings.get("mask", 0.0) + r.timings.get("closeup", 0.0) for r in photos)
    crops = sum(1 for r in summary.records if r.parent)
    print(f"{len(photos)} results, {crops} close-ups, build {wall:.1f}s")
    print(f"added by masks + close-ups: {added / max(len(photos), 1):.2f}s per photo, "
          f"ratio to the build {added / wall:.3f}")


if __name__ == "__main__":
    main()
