"""Which border fills a swap crop where it reaches past the photo: measured on edge-touching faces.

    python bench/swap_border.py [--photos 8] [--cut 0.2] [--donors DIR]

Each donor photo is cut so its face runs past the photo's left or top edge (``--cut`` of the face
box's side removed). The fused pass then runs on the cut photo with each border rule, and on
the uncut photo, where the crop never leaves the photo: that run is the reference, cut to the
same window. The swapper is a stand-in for a generator's receptive field (a Gaussian blur of
its 256 crop: every output pixel mixes its neighbours, as a conv net's does, so what the border
puts in the crop reaches the face), the restorer passes its crop through.

Printed per rule, from one run (dlib detector and judge, CPU):
- identity: the judge's cosine between the result's face and the reference's (1 = the border
  changed nothing the judge sees);
- seam: the mean absolute difference to the reference, in grey levels, in the 12 px band along
  the cut edge, and its largest value there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.identity_models import IdentityRestorer, IdentitySwapper, fixed_source
from builder.config import Config, SwapConfig
from builder.faces import align
from builder.faces.detect import make_detector
from builder.faces.identity import cosine, make_judge
from builder.faces.types import Face
from builder.io import load_image
from builder.swap.fused import FaceJob, FusedPass

BAND = 12
RULES = ("constant", "replicate", "reflect")


class BlurSwapper(IdentitySwapper):
    name = "blur"

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        return np.stack([cv2.GaussianBlur(c, (0, 0), 4.0) for c in crops])


def shifted(face: Face, dx: int, dy: int) -> Face:
    d = np.array([dx, dy], dtype=np.float32)
    return Face(box=face.box - np.tile(d, 2), score=face.score, kps=face.kps - d)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--cut", type=float, default=0.2)
    ap.add_argument("--donors", default="/work/shared/data/donors")
    args = ap.parse_args()
    cfg = Config()
    cfg.faces.detector = cfg.faces.judge = "dlib"
    cfg.runtime.random_weights = True
    detector, judge = make_detector(cfg), make_judge(cfg)
    fused = FusedPass(BlurSwapper(), IdentityRestorer(), None, SwapConfig(mouth=False, paste_mask="box"))
    source = fixed_source(fused, np.ones(512, np.float32))
    scores: dict[str, list[tuple[float, float, float]]] = {r: [] for r in RULES}
    for n, path in enumerate(sorted(Path(args.donors).iterdir())[: args.photos]):
        image = load_image(path)
        faces = detector.detect(image)
        if not faces:
            continue
        face = faces[0]
        x0, y0, x1, y1 = face.box
        side = max(x1 - x0, y1 - y0)
        left = n % 2 == 0  # alternate: cut through the face's left side, or its top
        dx = int(x0 + args.cut * side) if left else 0
        dy = 0 if left else int(y0 + args.cut * side)
        cut, cut_face = image[dy:, dx:], shifted(face, dx, dy)
        saved = align.SWAP_BORDER
        align.SWAP_BORDER = "constant"  # the uncut photo: the crop stays inside it, any rule is the same
        reference = fused.run([FaceJob(image, face)], source)[0].image[dy:, dx:]
        ref_emb = judge.embed(reference, cut_face)
        band = (slice(None), slice(0, BAND)) if left else (slice(0, BAND), slice(None))
        for rule in RULES:
            align.SWAP_BORDER = rule
            out = fused.run([FaceJob(cut, cut_face)], source)[0].image
            diff = np.abs(out.astype(np.float64) - reference.astype(np.float64))[band]
            scores[rule].append((float(cosine(judge.embed(out, cut_face), ref_emb)), float(diff.mean()), float(diff.max())))
        align.SWAP_BORDER = saved
    print(f"{len(scores[RULES[0]])} edge-touching faces, cut {args.cut:.0%} of the face box")
    print(f"{'border':10s} {'identity (cos)':>15s} {'seam mean':>10s} {'seam max':>9s}")
    for rule in RULES:
        a = np.array(scores[rule])
        print(f"{rule:10s} {a[:, 0].mean():15.4f} {a[:, 1].mean():10.2f} {a[:, 2].max():9.0f}")
    base = np.array(scores["constant"])[:, 1].mean()
    for rule in RULES[1:]:
        print(f"seam ratio {rule} / constant: {np.array(scores[rule])[:, 1].mean() / base:.3f}")


if __name__ == "__main__":
    main()
