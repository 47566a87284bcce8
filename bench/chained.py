"""The chained pass the brief warns about, kept only as the benchmark's baseline.

swap crop -> paste back into the photo -> detect again -> align to FFHQ -> restore ->
paste back again. Same models and masks as builder.swap.fused, so the difference the
benchmark measures is the extra detection and the extra resampling, nothing else.
"""

from __future__ import annotations

import numpy as np

from builder.faces import align
from builder.faces.types import Face
from builder.quality.scores import box_iou
from builder.swap.fused import FFHQ_SIZE, FaceJob, FusedPass
from builder.swap.source import SourceIdentity


class ChainedPass:
    resamplings = 4  # image->swap crop, crop->image, image->FFHQ crop, FFHQ crop->image

    def __init__(self, fused: FusedPass, detector):
        self.fused = fused
        self.detector = detector

    def run(self, jobs: list[FaceJob], source: SourceIdentity) -> list[np.ndarray | None]:
        f = self.fused
        m_swap = [f.swapper.alignment(j.face.kps) for j in jobs]
        crops = np.stack([align.warp(j.image, m, f.swapper.crop_size) for j, m in zip(jobs, m_swap, strict=True)])
        swapped = f.swapper.swap(crops, source.vectors[f.swapper.name])
        edge = f.swap_edge(f.swapper)
        pasted = [align.paste_back(j.image, s, m, edge) for j, s, m in zip(jobs, swapped, m_swap, strict=True)]
        out: list[np.ndarray | None] = []
        for image, job in zip(pasted, jobs, strict=True):
            face = _same_face(self.detector.detect(image), job.face)
            if face is None:
                out.append(None)  # the chained way loses faces the swap made hard to detect
                continue
            m_ffhq = align.estimate_ffhq(face.kps, FFHQ_SIZE)
            crop = align.warp(image, m_ffhq, FFHQ_SIZE, border="reflect")
            labels = f.parser.parse(crop[None])[0] if f.parser is not None else None
            restored = f.restorers[0].restore(crop[None])[0]
            mask, _ = f.paste_mask_for(labels)
            out.append(align.paste_back(image, restored, m_ffhq, mask))
        return out


def _same_face(faces: list[Face], original: Face) -> Face | None:
    """The re-detected face that overlaps the original box most."""
    best = max(faces, key=lambda fc: box_iou(fc.box, original.box), default=None)
    return best if best is not None and box_iou(best.box, original.box) > 0.3 else None
