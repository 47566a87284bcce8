"""Pose balance: yaw/pitch bins from the landmarks' head pose, and a cap on the fullest bins.

A folder of mostly frontal photos teaches one angle. Each kept photo falls in a bin of
``[dataset] pose_yaw_edges`` x ``pose_pitch_edges`` (degrees, faces/pose.py's signs); with
``pose_balance = "cap"`` no bin may hold more than ``pose_max_share`` of the training photos.
The cap is the largest per-bin count that meets the share, raised again where it would leave
fewer than ``min_train_images``; inside a capped bin the photos a person kept, then the
best scored, stay. A bin that cannot be balanced (one bin only) is left as it is and said so.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

UNKNOWN = "pose unknown"


@dataclass(frozen=True)
class PosedPhoto:
    key: str
    yaw: float | None
    pitch: float | None
    score: float = 0.0  # higher stays first inside a capped bin
    pinned: bool = False  # a person kept it: it stays before any scored photo


@dataclass
class Balance:
    kept: list[str]  # keys that train, in input order
    dropped: dict[str, str]  # key -> why it does not train
    bins: dict[str, str]  # key -> bin label
    before: dict[str, int]  # bin label -> photos, every bin of the grid (zeros too), in grid order
    after: dict[str, int]
    cap: int | None  # photos per bin at most; None: no cap applied
    note: str = ""
    order: list[str] = field(default_factory=list)  # bin labels in grid order


def _ranges(edges: list[float]) -> list[str]:
    points = ["", *(f"{e:g}" for e in edges), ""]
    out = []
    for lo, hi in itertools.pairwise(points):
        out.append(f"<{hi}" if not lo else f">={lo}" if not hi else f"{lo}..{hi}")
    return out


def bin_labels(yaw_edges: list[float], pitch_edges: list[float]) -> list[str]:
    """Every bin's label in grid order (pitch rows, yaw columns), then the unknown pose."""
    return [f"yaw {y} / pitch {p}" for p in _ranges(pitch_edges) for y in _ranges(yaw_edges)] + [UNKNOWN]


def bin_of(yaw: float | None, pitch: float | None, yaw_edges: list[float], pitch_edges: list[float]) -> str:
    if yaw is None or pitch is None or not math.isfinite(yaw) or not math.isfinite(pitch):
        return UNKNOWN
    y = _ranges(yaw_edges)[bisect.bisect_right(yaw_edges, yaw)]
    p = _ranges(pitch_edges)[bisect.bisect_right(pitch_edges, pitch)]
    return f"yaw {y} / pitch {p}"


def cap_for(counts: list[int], share: float, floor: int) -> int | None:
    """The largest per-bin cap under which no bin exceeds ``share`` of the total, raised until
    the capped total reaches ``floor`` (or the fullest bin); None where no cap meets the share."""
    counts = [c for c in counts if c > 0]
    if len(counts) < 2:
        return None
    top = max(counts)

    def total(k: int) -> int:
        return sum(min(c, k) for c in counts)

    cap = next((k for k in range(top, 0, -1) if min(top, k) <= share * total(k)), None)
    if cap is None:
        return None
    while cap < top and total(cap) < floor:
        cap += 1
    return None if cap >= top else cap


def balance(
    photos: list[PosedPhoto], yaw_edges: list[float], pitch_edges: list[float], max_share: float, floor: int, mode: str
) -> Balance:
    order = bin_labels(yaw_edges, pitch_edges)
    bins = {p.key: bin_of(p.yaw, p.pitch, yaw_edges, pitch_edges) for p in photos}
    counts = Counter(bins.values())
    before = {label: counts.get(label, 0) for label in order}
    cap = None
    note = ""
    if mode == "off":
        note = "off ([dataset] pose_balance = \"off\")"
    else:
        cap = cap_for(list(counts.values()), max_share, floor)
        if cap is None:
            fullest = max(counts.values(), default=0)
            if len([c for c in counts.values() if c]) < 2:
                note = "every photo is in one pose bin: nothing to balance against"
            elif fullest <= max_share * len(photos):
                note = f"balanced already (no bin over {max_share:.0%})"
            else:
                note = f"a cap would leave fewer than {floor} training photos ([dataset] min_train_images): not capped"
    dropped: dict[str, str] = {}
    if cap is not None:
        for label in order:
            members = [p for p in photos if bins[p.key] == label]
            members.sort(key=lambda p: (not p.pinned, -p.score, p.key))
            for p in members[cap:]:
                dropped[p.key] = f"pose balance: bin '{label}' holds {len(members)}, capped at {cap}"
        note = f"capped at {cap} photos per bin (no bin over {max_share:.0%}); {len(dropped)} photo(s) left out"
    kept = [p.key for p in photos if p.key not in dropped]
    after_counts = Counter(bins[k] for k in kept)
    after = {label: after_counts.get(label, 0) for label in order}
    return Balance(kept, dropped, bins, before, after, cap, note, order)
