"""Decisions across results: near-duplicates and ``--keep N``.

Both rank by ``combined_score`` so the better of two duplicates, and the best N overall,
survive. They only ever turn kept results into rejected ones, and are deterministic
(ties broken by name), so a resumed run decides the same way.

Duplicates are found by perceptual hash, not by judge embedding: after the swap every
result carries the same identity, so embeddings of different photos are close by design.
"""

from __future__ import annotations

from builder.quality.decide import DUPLICATE, NOT_IN_BEST, Assessment
from builder.quality.scores import hamming


def _ranked(items: list[Assessment]) -> list[Assessment]:
    return sorted((a for a in items if a.decision.kept), key=lambda a: (-a.combined, a.name))


def mark_duplicates(items: list[Assessment], max_hamming: int) -> list[Assessment]:
    """Reject every kept result within ``max_hamming`` bits of a better kept one."""
    survivors: list[Assessment] = []
    for a in _ranked(items):
        if a.scores.phash is None:
            survivors.append(a)
            continue
        twin = next(
            (s for s in survivors if s.scores.phash is not None and hamming(a.scores.phash, s.scores.phash) <= max_hamming),
            None,
        )
        if twin is None:
            survivors.append(a)
        else:
            a.decision.reject(f"{DUPLICATE} {twin.name}")
    return items


def select_best(items: list[Assessment], n: int) -> list[Assessment]:
    """Keep the ``n`` kept results with the highest combined score; ``n <= 0`` keeps all."""
    if n > 0:
        for a in _ranked(items)[n:]:
            a.decision.reject(NOT_IN_BEST)
    return items


def finalize(items: list[Assessment], max_hamming: int, keep: int) -> list[Assessment]:
    """Duplicates first (so a duplicate never takes one of the N places), then the best N."""
    return select_best(mark_duplicates(items, max_hamming), keep)
