"""The one per-face best-of loop: several candidates made the same faces, the judge keeps one per face.

It serves ``swap.swapper = "best"`` (candidates are swapped faces carried into the FFHQ crop,
before the mouth and the restorer) and ``swap.restorer = "best"`` (candidates are restored FFHQ
crops). Every candidate is scored in the FFHQ crop by the identity judge (never a swapper's
own recognizer): cosine to the source, cosine to the donor's own face, and the Laplacian
sharpness of the face. The winner has the highest source similarity among the candidates whose
donor similarity is below the "did not take" threshold (all of them when none is); within
``TIE`` of the best similarity, the sharper one wins.

With a report judge (``faces.report_judge``) every candidate is scored a second time, and the
same rule run on those scores says which candidate the report judge would have kept
(``Choice.report_chosen``): the build counts how often the two judges agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from builder.faces import align
from builder.faces.identity import cosine
from builder.faces.types import Face
from builder.quality.scores import Judge, laplacian_variance

# Judge cosines closer than this are the same answer; sharpness decides between them.
TIE = 1e-3


@dataclass(frozen=True)
class CandidateScore:
    source_similarity: float
    donor_similarity: float
    sharpness: float  # Laplacian variance of the face box (builder.quality.scores.BLUR_SIZE square)
    report_source_similarity: float | None = None  # the report judge's cosines, where there is one
    report_donor_similarity: float | None = None


@dataclass(frozen=True)
class Choice:
    chosen: str
    candidates: dict[str, CandidateScore]
    report_chosen: str | None = None  # the candidate the report judge's scores would have kept

    def to_dict(self) -> dict:
        out: dict = {
            "chosen": self.chosen,
            "candidates": {
                k: {f: round(v, 4) for f, v in asdict(s).items() if v is not None} for k, s in self.candidates.items()
            },
        }
        if self.report_chosen is not None:
            out["report_chosen"] = self.report_chosen
        return out


def pick(scores: dict[str, CandidateScore], max_donor_similarity: float | None) -> str:
    """The winning candidate's name (see the module docstring); ``scores`` keeps candidate order."""
    if not scores:
        raise ValueError("no candidates to choose from")
    took = {
        k: s for k, s in scores.items() if max_donor_similarity is None or s.donor_similarity <= max_donor_similarity
    }
    pool = took or scores
    top = max(s.source_similarity for s in pool.values())
    near = [k for k, s in pool.items() if s.source_similarity >= top - TIE]
    return max(near, key=lambda k: pool[k].sharpness)


def report_pick(scores: dict[str, CandidateScore], max_donor_similarity: float | None) -> str | None:
    """``pick`` on the report judge's cosines; None when the candidates were not scored by one."""
    if any(s.report_source_similarity is None or s.report_donor_similarity is None for s in scores.values()):
        return None
    return pick(
        {
            k: CandidateScore(s.report_source_similarity, s.report_donor_similarity, s.sharpness)  # type: ignore[arg-type]
            for k, s in scores.items()
        },
        max_donor_similarity,
    )


class CropJudge:
    """Scores FFHQ crops of one batch of faces against the source and each face's donor."""

    def __init__(
        self,
        judge: Judge,
        source: np.ndarray,
        originals: np.ndarray,
        faces: Sequence[Face],
        report: tuple[Judge, np.ndarray] | None = None,
    ):
        self.judge = judge
        self.source = source
        self.faces = list(faces)
        self.donors = [judge.embed(crop, face) for crop, face in zip(originals, self.faces, strict=True)]
        # (report judge, source identity by it); the selection judge itself is scored once.
        self.report = report
        self.report_donors = (
            self.donors
            if report is None or report[0] is judge
            else [report[0].embed(crop, face) for crop, face in zip(originals, self.faces, strict=True)]
        )

    @classmethod
    def for_jobs(
        cls,
        judge: Judge,
        source: np.ndarray,
        originals: np.ndarray,
        faces: Sequence[Face],
        m_ffhq: Sequence[np.ndarray],
        report: tuple[Judge, np.ndarray] | None = None,
    ) -> CropJudge:
        """The donor faces mapped into their FFHQ crops (the judge re-finds dense landmarks there)."""
        mapped = [
            Face(
                box=align.transform_box(m, f.box).astype(np.float32),
                score=f.score,
                kps=align.transform_points(m, f.kps).astype(np.float32),
            )
            for f, m in zip(faces, m_ffhq, strict=True)
        ]
        return cls(judge, source, originals, mapped, report)

    def score(self, i: int, crop: np.ndarray) -> CandidateScore:
        emb = self.judge.embed(crop, self.faces[i])
        src, donor = float(cosine(emb, self.source)), float(cosine(emb, self.donors[i]))
        rep_src = rep_donor = None
        if self.report is not None:
            rep_judge, rep_source = self.report
            rep_emb = emb if rep_judge is self.judge else rep_judge.embed(crop, self.faces[i])
            rep_src = float(cosine(rep_emb, rep_source))
            rep_donor = float(cosine(rep_emb, self.report_donors[i]))
        return CandidateScore(
            source_similarity=src,
            donor_similarity=donor,
            sharpness=laplacian_variance(crop, self.faces[i].box),
            report_source_similarity=rep_src,
            report_donor_similarity=rep_donor,
        )


def best_of(
    candidates: dict[str, np.ndarray],
    judge: CropJudge,
    max_donor_similarity: float | None,
    report_max_donor_similarity: float | None = None,
) -> tuple[np.ndarray, list[Choice]]:
    """(N, H, W, 3) crops per candidate -> the winning crop of each face, and every face's Choice.

    ``report_max_donor_similarity`` is the report judge's own "did not take" cosine (the judges'
    scales differ), used only to say what the report judge would have kept.
    """
    names = list(candidates)
    n = len(next(iter(candidates.values())))
    winners, choices = [], []
    for i in range(n):
        scores = {k: judge.score(i, candidates[k][i]) for k in names}
        chosen = pick(scores, max_donor_similarity)
        winners.append(candidates[chosen][i])
        choices.append(Choice(chosen, scores, report_pick(scores, report_max_donor_similarity)))
    return np.stack(winners), choices
