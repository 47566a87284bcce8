"""The table ``launch.py build`` ends with: what was kept, why the rest was not, and the scores."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from rich.table import Table

from builder.quality.decide import DUPLICATE, Assessment

SCORE_COLUMNS = (
    "det_score",
    "face_px",
    "blur_donor",
    "blur_result",
    "blur_ratio",
    "source_similarity",
    "donor_similarity",
    "report_source_similarity",
    "report_donor_similarity",
    "yaw",
    "pitch",
    "redetect_faces",
)


def _as_dict(record: Assessment | dict[str, Any]) -> dict[str, Any]:
    return record.to_dict() if isinstance(record, Assessment) else record


def reason_counts(records: list[Assessment | dict[str, Any]]) -> Counter[str]:
    """Rejections per reason; duplicates are counted together whatever they duplicate."""
    counts: Counter[str] = Counter()
    for r in map(_as_dict, records):
        for reason in r.get("reasons", []):
            counts[DUPLICATE if reason.startswith(DUPLICATE) else reason] += 1
    return counts


def distributions(records: list[Assessment | dict[str, Any]]) -> dict[str, tuple[int, float, float, float]]:
    """(count, min, median, max) of every score measured on at least one record."""
    out = {}
    dicts = [_as_dict(r) for r in records]
    for name in SCORE_COLUMNS:
        values = [r["scores"][name] for r in dicts if r.get("scores", {}).get(name) is not None]
        if values:
            arr = np.asarray(values, dtype=np.float64)
            out[name] = (len(values), float(arr.min()), float(np.median(arr)), float(arr.max()))
    return out


def judge_agreement(choices: list[dict[str, Any] | None]) -> dict[str, tuple[int, int]]:
    """Per best-of stage ("swapper", "restorer"): (faces where the report judge would have kept
    the same candidate, faces where both judges scored the candidates)."""
    out: dict[str, tuple[int, int]] = {}
    for choice in choices:
        for stage, c in (choice or {}).items():
            if isinstance(c, dict) and c.get("report_chosen") is not None:
                agree, total = out.get(stage, (0, 0))
                out[stage] = (agree + (c["report_chosen"] == c.get("chosen")), total + 1)
    return out


def agreement_sentence(agreement: dict[str, tuple[int, int]], report_judge: str, same_network: bool) -> str | None:
    """e.g. "best-of: the report judge (dlib) kept the same swapper on 7 of 10 faces"; None without a best-of."""
    if not agreement:
        return None
    if same_network:
        return "best-of: one network both selected and reports, so the judges agree by construction"
    parts = [f"the same {stage} on {a} of {n} faces" for stage, (a, n) in sorted(agreement.items())]
    return f"best-of: the report judge ({report_judge}) would have kept " + "; ".join(parts)


def summarize(records: list[Assessment | dict[str, Any]], title: str | None = None) -> Table:
    """What the scores decided. Accepts Assessments or their manifest dicts (a resumed run has only the latter)."""
    dicts = [_as_dict(r) for r in records]
    kept = sum(1 for r in dicts if r.get("kept"))
    table = Table(title=title or f"Quality: kept {kept} of {len(dicts)}")
    table.add_column("")
    table.add_column("n", justify="right")
    table.add_column("min", justify="right")
    table.add_column("median", justify="right")
    table.add_column("max", justify="right")
    table.add_row("[green]kept[/green]", str(kept), "", "", "")
    table.add_row("[red]rejected[/red]", str(len(dicts) - kept), "", "", "")
    # A result can fail several checks, so these may add up to more than "rejected".
    for reason, n in sorted(reason_counts(dicts).items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"  {reason}", str(n), "", "", "")
    table.add_section()
    for name, (n, lo, med, hi) in distributions(dicts).items():
        table.add_row(name, str(n), f"{lo:.3g}", f"{med:.3g}", f"{hi:.3g}")
    return table
