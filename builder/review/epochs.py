"""The sample stage's verdict for the review page: its epoch plot (``samples/epochs.svg``: identity,
donor leakage and prompt adherence per epoch) and the best-epoch rule's sentence.

Kept apart from the cards so the page's Samples tab gets it through one hook in ``samples_view``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from builder.sample.plot import PLOT_FILE

PLOT = f"samples/{PLOT_FILE}"
# Per-epoch numbers of report.json the Samples tab shows beside the identity.
EPOCH_VERDICT_KEYS = ("mean_donor_similarity", "share_closer_to_donor", "mean_adherence", "validation_loss", "verdict")


def epoch_plot_view(out: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The plot's URL (None before a scored `sample` run made it), the verdict and the rule."""
    rule = report.get("best_epoch_rule")
    rule = rule if isinstance(rule, dict) else {}
    return {
        "epoch_plot": "/files/" + quote(PLOT) if (Path(out) / PLOT).is_file() else None,
        "verdict": rule.get("sentence"),
        "rule": rule.get("rule"),
    }
