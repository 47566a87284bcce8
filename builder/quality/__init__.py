"""Quality filters: measured scores, keep/reject decisions with named reasons, the summary.

The build stage calls, per photo, ``score_result`` then ``assess``; once all photos are
scored, ``finalize`` (near-duplicates, then ``quality.keep``); at the end, ``summarize``.
"""

from builder.quality.decide import Assessment, Decision, assess, combined_score, decide
from builder.quality.dedup import finalize, mark_duplicates, select_best
from builder.quality.scores import Scores, laplacian_variance, phash, redetect, score_result
from builder.quality.summary import summarize

__all__ = [
    "Assessment",
    "Decision",
    "Scores",
    "assess",
    "combined_score",
    "decide",
    "finalize",
    "laplacian_variance",
    "mark_duplicates",
    "phash",
    "redetect",
    "score_result",
    "select_best",
    "summarize",
]
