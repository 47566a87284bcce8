"""manifest.jsonl: one record per donor photo, the build's memory across runs.

A record is appended (and fsynced) as soon as a photo is done, after its output file
is in place, so a killed run resumes from the last finished photo. Decisions that
need every photo (near-duplicates, --keep N) are made at the end, and the file is
then rewritten atomically with the final status of each record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from builder.io import append_jsonl, atomic_write_text, read_jsonl

KEPT = "kept"
REJECTED = "rejected"
FAILED = "failed"  # the photo could not be used at all (unreadable, no face, ...)

# Who made a scored record's final status (Record.decided_by); ``reasons`` always lists the
# checks the scores failed, so a status that differs from the scores' verdict says why here.
BY_SCORES = "scores"
BY_RANDOM_WEIGHTS = "random weights"  # --random-weights kept what the scores rejected (so later stages have data)
BY_OVERRIDE = "override"  # a person's decision in overrides.json; the stamp is in Record.override
BY_PARENT = "parent"  # a close-up rejected with the photo it was cut from


@dataclass
class Record:
    key: str  # path relative to the donor folder, with forward slashes: unique per photo
    input: str
    status: str
    reasons: list[str] = field(default_factory=list)
    output: str | None = None  # result file, relative to the run folder
    face: dict[str, Any] | None = None  # box, score, kps of the donor face
    donor_face: str = ""  # which face was taken and why
    transforms: dict[str, list[list[float]]] | None = None  # image->crop affines
    paste_mask: str | None = None
    # the swapper and restorer that made the result; in "best" modes every candidate's judge scores
    choice: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None  # builder.quality Assessment: scores, combined, reasons
    timings: dict[str, float] = field(default_factory=dict)
    decided_by: str = ""  # BY_SCORES, BY_RANDOM_WEIGHTS or BY_OVERRIDE ("" for a failed photo)
    dataset: dict[str, Any] | None = None  # builder.dataset plan: role (train, validation, ...), pose bin, reason
    override: dict[str, str] | None = None  # the overrides.json stamp (value, by, at) behind the status
    # ---- close-ups and loss masks (builder.dataset) ----
    parent: str | None = None  # a close-up: the key of the photo whose result it was cut from
    crop_box: list[float] | None = None  # a close-up: its square in the parent's result, x0 y0 x1 y1 px
    closeup: str = ""  # a photo: its close-up's key, or why it has none
    mask: str | None = None  # the loss mask, relative to the run folder
    mask_note: str = ""  # why there is no loss mask

    @property
    def scores_kept(self) -> bool:
        """What the quality filter alone decided (duplicates and --keep N included)."""
        return bool((self.quality or {}).get("kept")) and self.status != FAILED

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Tally:
    """One story for the terminal, the manifest and the review page: what the scores decided,
    and what was kept or rejected anyway, and why."""

    kept: int
    rejected: int
    failed: int
    scores_kept: int  # scored results the quality filter passed
    scores_rejected: int
    kept_anyway: int  # rejected by the scores, kept by --random-weights
    override_kept: int  # a person kept it (whatever the scores said)
    override_rejected: int
    closeups: int = 0  # kept close-ups, besides the photos counted above

    @classmethod
    def of(cls, records: list[Record]) -> Tally:
        closeups = sum(r.status == KEPT for r in records if r.parent)
        records = [r for r in records if not r.parent]
        scored = [r for r in records if r.status != FAILED]
        by = [(r.status, r.decided_by) for r in scored]
        return cls(
            kept=sum(s == KEPT for s, _ in by),
            rejected=sum(s == REJECTED for s, _ in by),
            failed=len(records) - len(scored),
            scores_kept=sum(r.scores_kept for r in scored),
            scores_rejected=sum(not r.scores_kept for r in scored),
            kept_anyway=sum(s == KEPT and b == BY_RANDOM_WEIGHTS for s, b in by),
            override_kept=sum(s == KEPT and b == BY_OVERRIDE for s, b in by),
            override_rejected=sum(s == REJECTED and b == BY_OVERRIDE for s, b in by),
            closeups=closeups,
        )

    def describe(self) -> str:
        """e.g. "3 kept, 0 rejected, 1 unusable; the scores kept 0 of 3; kept anyway: 3 (--random-weights)"."""
        text = f"{self.kept} kept, {self.rejected} rejected, {self.failed} unusable; the scores kept {self.scores_kept} of {self.scores_kept + self.scores_rejected}"
        extra = []
        if self.kept_anyway:
            extra.append(f"kept anyway: {self.kept_anyway} (--random-weights keeps every result)")
        if self.override_kept:
            extra.append(f"kept by a person: {self.override_kept}")
        if self.override_rejected:
            extra.append(f"rejected by a person: {self.override_rejected}")
        if self.closeups:
            extra.append(f"plus {self.closeups} close-up(s) of small faces")
        return "; ".join([text, *extra])


def result_name(key: str, suffix: str = ".png") -> str:
    """A file name safe on every OS, unique per donor photo, stable across runs.

    Two photos with the same name in different subfolders get different names through
    the short hash of their relative path; the readable stem is kept for the user.
    """
    stem = PurePosixPath(key).stem
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:60] or "photo"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    return f"{stem}_{digest}{suffix}"


class Manifest:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, Record] = {}
        for d in read_jsonl(self.path):
            rec = Record.from_dict(d)
            self.records[rec.key] = rec  # a later line for the same photo wins

    def done(self, key: str, run_dir: Path) -> bool:
        """A photo is done when its record exists and, if it made a result, the file is there."""
        rec = self.records.get(key)
        if rec is None:
            return False
        return rec.output is None or (Path(run_dir) / rec.output).is_file()

    def add(self, record: Record) -> None:
        append_jsonl(self.path, record.to_dict())
        self.records[record.key] = record

    def rewrite(self) -> None:
        records = sorted(self.records.values(), key=lambda r: r.key)
        atomic_write_text(self.path, "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records))
