"""The fused swap -> mouth -> restore -> paste pass.

Per face: the original photo is warped once into the swapper's crop and once into the
restorer's FFHQ-512 crop, from the same detected landmarks. The swapped face travels
from the swap crop into the FFHQ crop with the composed affine (one resampling), the
donor's own mouth goes back in from the original FFHQ crop, the restorer runs, and the
result is pasted into the photo once. Nothing is detected twice and nothing is pasted
back and re-aligned, so the face pixels are resampled three times instead of four and
the detector cost is paid once (bench/fused_vs_chained.py measures both).

With several swappers or restorers ("best" modes) every candidate runs on the whole batch
(one batch per model) and builder.swap.best keeps one per face; the restorers then run on
the winning swaps only. The winner's own alignment is the one recorded and carried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from builder.config import SwapConfig
from builder.faces import align
from builder.faces.types import Face
from builder.models.base import FaceParser, Restorer, Swapper
from builder.quality.scores import Judge
from builder.swap.best import Choice, CropJudge, best_of
from builder.swap.masks import blend, label_mask
from builder.swap.parsing import FACE_LABELS, MOUTH_LABELS
from builder.swap.source import SourceIdentity

FFHQ_SIZE = 512
# How much of the swap crop's edge is faded out before it is carried into the FFHQ crop:
# the generator's outermost pixels are its least reliable and its crop edge is a hard line.
SWAP_EDGE_ERODE = 0.04
SWAP_EDGE_FEATHER = 0.08
# The fallback paste mask: facexlib erodes and blurs the whole FFHQ crop box the same way.
BOX_ERODE = 0.04
BOX_FEATHER = 0.06
# A parsing map whose face region covers less than this share of the crop is not trusted
# (a missed parse, or random weights); the box mask is used instead and the record says so.
MIN_PARSED_FACE_SHARE = 0.05


@dataclass
class FaceJob:
    image: np.ndarray  # the full original photo, uint8 BGR; never modified
    face: Face


@dataclass
class FusedResult:
    image: np.ndarray  # full-resolution result
    m_swap: np.ndarray  # image -> swap crop
    m_ffhq: np.ndarray  # image -> FFHQ crop
    paste_mask: str  # "parsing" or "box" (fallback)
    mask: np.ndarray  # the paste mask itself, float32 in FFHQ-crop space
    mouth: bool
    restored_crop: np.ndarray  # the FFHQ crop after restoration, before paste-back: what the restorer made
    swapper: str = ""  # the swapper and restorer this face was made with
    restorer: str = ""
    choices: dict[str, Choice] = field(default_factory=dict)  # "swapper"/"restorer" -> scores, in best modes
    timings: dict[str, float] = field(default_factory=dict)  # seconds per face, by step

    def choice_dict(self) -> dict:
        """For the manifest: what made this face and, in best modes, every candidate's scores."""
        out: dict = {"swapper": {"chosen": self.swapper}, "restorer": {"chosen": self.restorer}}
        out.update({stage: c.to_dict() for stage, c in self.choices.items()})
        return out


class FusedPass:
    """Runs a batch of faces (from any number of photos) through each model once."""

    resamplings = 3  # image->swap crop, swap crop->FFHQ crop, FFHQ crop->image

    def __init__(
        self,
        swappers: Swapper | Sequence[Swapper],
        restorers: Restorer | Sequence[Restorer],
        parser: FaceParser | None,
        cfg: SwapConfig,
        judge: Judge | None = None,
        max_donor_similarity: float | None = None,
        report_judge: Judge | None = None,
        report_max_donor_similarity: float | None = None,
    ):
        self.swappers = [swappers] if not isinstance(swappers, Sequence) else list(swappers)
        self.restorers = [restorers] if not isinstance(restorers, Sequence) else list(restorers)
        if not self.swappers or not self.restorers:
            raise ValueError("the fused pass needs at least one swapper and one restorer")
        if parser is None and cfg.needs_parser:
            raise ValueError("a face parser is needed for the mouth transplant and the parsing paste mask")
        if judge is None and (len(self.swappers) > 1 or len(self.restorers) > 1):
            raise ValueError("choosing among several swappers or restorers needs an identity judge")
        self.parser = parser
        self.cfg = cfg
        self.judge = judge
        self.max_donor_similarity = max_donor_similarity
        # Scores every candidate a second time so the build can say how often both judges agree.
        self.report_judge = report_judge
        self.report_max_donor_similarity = report_max_donor_similarity
        self._edges = {
            s.name: align.box_mask(s.crop_size, int(s.crop_size * SWAP_EDGE_ERODE), int(s.crop_size * SWAP_EDGE_FEATHER))
            for s in self.swappers
        }
        self._box = align.box_mask(FFHQ_SIZE, int(FFHQ_SIZE * BOX_ERODE), int(FFHQ_SIZE * BOX_FEATHER))

    @property
    def swapper(self) -> Swapper:
        """The first (or only) swapper: the source identity is embedded by every one of them."""
        return self.swappers[0]

    def swap_edge(self, swapper: Swapper) -> np.ndarray:
        """The feathered edge mask in ``swapper``'s crop that blends its face into the FFHQ crop."""
        return self._edges[swapper.name]

    def run(self, jobs: Sequence[FaceJob], source: SourceIdentity) -> list[FusedResult]:
        if not jobs:
            return []
        n = len(jobs)
        t: dict[str, float] = {}

        def tick(step: str, start: float) -> float:
            now = time.perf_counter()
            t[step] = t.get(step, 0.0) + (now - start) / n
            return now

        start = time.perf_counter()
        m_ffhq = [align.estimate_ffhq(j.face.kps, FFHQ_SIZE) for j in jobs]
        # Reflect, not black, beyond the photo's edge: the restorer and the parser see plausible
        # context instead of a hard black border they were never trained on.
        originals = np.stack(
            [align.warp(j.image, m, FFHQ_SIZE, border="reflect") for j, m in zip(jobs, m_ffhq, strict=True)]
        )
        start = tick("warp", start)
        crop_judge = None
        if self.judge is not None and (len(self.swappers) > 1 or len(self.restorers) > 1):
            if source.judge is None:
                raise ValueError("choosing among candidates needs the source's judge embedding")
            report = (
                (self.report_judge, source.report)
                if self.report_judge is not None and source.report is not None
                else None
            )
            crop_judge = CropJudge.for_jobs(
                self.judge, source.judge, originals, [j.face for j in jobs], m_ffhq, report
            )
            start = tick("judge", start)

        carried: dict[str, np.ndarray] = {}
        m_swaps: dict[str, list[np.ndarray]] = {}
        for swapper in self.swappers:
            m_swap = [swapper.alignment(j.face.kps) for j in jobs]
            crops = np.stack([align.warp(j.image, m, swapper.crop_size) for j, m in zip(jobs, m_swap, strict=True)])
            start = tick("warp", start)
            swapped = swapper.swap(crops, source.vectors[swapper.name])
            start = tick("swap", start)
            merged = []
            for i in range(n):
                # swap crop -> image -> FFHQ crop, as one affine: the face is resampled once here.
                carry = align.compose(m_ffhq[i], align.invert(m_swap[i]))
                face_in_ffhq = align.warp(swapped[i], carry, FFHQ_SIZE)
                edge = align.warp(self.swap_edge(swapper), carry, FFHQ_SIZE)
                merged.append(blend(originals[i], face_in_ffhq, edge))
            carried[swapper.name], m_swaps[swapper.name] = np.stack(merged), m_swap
            start = tick("carry", start)

        swap_choices: list[Choice | None] = [None] * n
        if len(carried) > 1:
            merged_arr, picked = best_of(
                carried, crop_judge, self.max_donor_similarity, self.report_max_donor_similarity
            )
            swap_choices = list(picked)
            start = tick("choose", start)
        else:
            merged_arr = next(iter(carried.values())).copy()
        used_swapper = [c.chosen if c else self.swapper.name for c in swap_choices]

        labels = self.parser.parse(originals) if self.parser is not None else None
        start = tick("parse", start)

        if self.cfg.mouth and labels is not None:
            for i in range(n):
                mouth = label_mask(labels[i], MOUTH_LABELS, self.cfg.mouth_dilate, self.cfg.mouth_feather)
                merged_arr[i] = blend(merged_arr[i], originals[i], mouth)
        start = tick("mouth", start)

        restored_by = {r.name: r.restore(merged_arr) for r in self.restorers}
        start = tick("restore", start)
        restore_choices: list[Choice | None] = [None] * n
        if len(restored_by) > 1:
            restored, picked = best_of(restored_by, crop_judge, None, None)
            restore_choices = list(picked)
            start = tick("choose", start)
        else:
            restored = next(iter(restored_by.values()))
        used_restorer = [c.chosen if c else self.restorers[0].name for c in restore_choices]

        results = []
        for i, job in enumerate(jobs):
            mask, kind = self.paste_mask_for(labels[i] if labels is not None else None)
            image = align.paste_back(job.image, restored[i], m_ffhq[i], mask)
            choices = {k: c for k, c in (("swapper", swap_choices[i]), ("restorer", restore_choices[i])) if c}
            results.append(
                FusedResult(
                    image=image,
                    m_swap=m_swaps[used_swapper[i]][i],
                    m_ffhq=m_ffhq[i],
                    paste_mask=kind,
                    mask=mask,
                    mouth=bool(self.cfg.mouth and labels is not None),
                    restored_crop=restored[i],
                    swapper=used_swapper[i],
                    restorer=used_restorer[i],
                    choices=choices,
                    timings=t,
                )
            )
        tick("paste", start)
        return results

    def paste_mask_for(self, labels: np.ndarray | None) -> tuple[np.ndarray, str]:
        if self.cfg.paste_mask == "parsing" and labels is not None:
            face = label_mask(labels, FACE_LABELS, dilate=FFHQ_SIZE // 64, feather=FFHQ_SIZE // 32)
            if float((face > 0.5).mean()) >= MIN_PARSED_FACE_SHARE:
                return face * self._box, "parsing"
        return self._box, "box"
