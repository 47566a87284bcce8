"""``samples/epochs.svg``: the three curves the best epoch is chosen from, one panel each.

Identity (mean report-judge cosine to the source), leakage (share of sample faces closer to
the donor than to the source) and prompt adherence (mean CLIP cosine), over the LoRA epochs in
training order, with the validation loss as a fourth panel when the training log has it. Each
panel draws its rule line (the leak threshold; the base model's adherence and the margin below
it; the base model's identity), and a vertical line marks the best epoch (green) or, when none
qualifies, the closest (amber). Plain SVG, so the review page shows it with an <img>.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from builder.io import atomic_write_text
from builder.sample.epochs import Epoch
from builder.sample.score import EpochSummary
from builder.sample.verdict import BestEpoch

PLOT_FILE = "epochs.svg"  # in samples/; the review page shows it
WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP = 640, 130, 70, 20, 28, 36
LINE, REF, LIMIT, BEST, CLOSEST, TEXT = "#2b6cb0", "#888888", "#c53030", "#2f855a", "#d69e2e", "#222222"


@dataclass(frozen=True)
class Panel:
    title: str
    values: list[float | None]
    refs: list[tuple[float, str, str]]  # (value, label, colour) horizontal lines


def _panels(epochs: list[Epoch], summaries: dict[str, EpochSummary], verdict: BestEpoch) -> list[Panel]:
    runs = [summaries.get(e.label) for e in epochs if not e.is_control]
    base = next((summaries.get(e.label) for e in epochs if e.is_control), None)
    identity_refs = [] if base is None or base.mean_similarity is None else [(base.mean_similarity, "base", REF)]
    adherence_refs = []
    if verdict.base_adherence is not None:
        adherence_refs = [
            (verdict.base_adherence, "base", REF),
            (verdict.base_adherence - verdict.adherence_margin, "base - margin", LIMIT),
        ]
    panels = [
        Panel("identity to the source (report judge)", [s.mean_similarity if s else None for s in runs], identity_refs),
        Panel(
            "share of faces closer to the donor",
            [s.share_closer_to_donor if s else None for s in runs],
            [(verdict.max_donor_share, "leak threshold", LIMIT)],
        ),
        Panel("prompt adherence (CLIP)", [s.mean_adherence if s else None for s in runs], adherence_refs),
    ]
    losses = [s.validation_loss if s else None for s in runs]
    if any(v is not None for v in losses):
        panels.append(Panel("validation loss", losses, []))
    return panels


def render_epoch_plot(epochs: list[Epoch], summaries: dict[str, EpochSummary], verdict: BestEpoch) -> str:
    runs = [e for e in epochs if not e.is_control]
    labels = [e.label for e in runs]
    # epoch numbers on the axis where the names carry them: "ohwx-000007" would crowd it
    ticks = [str(e.number) if e.kind == "epoch" and e.number is not None else e.label for e in runs]
    panels = _panels(epochs, summaries, verdict)
    height = TOP + len(panels) * (PANEL_H + GAP) + 56
    plot_w = WIDTH - LEFT - RIGHT
    step = plot_w / max(len(labels) - 1, 1)

    def x_of(i: int) -> float:
        return LEFT + (i * step if len(labels) > 1 else plot_w / 2)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="16" font-size="13" fill="{TEXT}">{escape(verdict.sentence)}</text>',
    ]
    marked = verdict.best or verdict.closest
    for p, panel in enumerate(panels):
        y0 = TOP + p * (PANEL_H + GAP) + 14
        known = [v for v in panel.values if v is not None] + [r[0] for r in panel.refs]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.05, hi + 0.05
        pad = (hi - lo) * 0.1
        lo, hi = lo - pad, hi + pad

        def y_of(v: float, y0: float = y0, lo: float = lo, hi: float = hi) -> float:
            return y0 + PANEL_H - (v - lo) / (hi - lo) * PANEL_H

        out.append(f'<text x="{LEFT}" y="{y0 - 4}" fill="{TEXT}">{escape(panel.title)}</text>')
        out.append(f'<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#cccccc"/>')
        for v in (lo + pad, hi - pad):
            out.append(f'<text x="{LEFT - 6}" y="{y_of(v) + 4:.1f}" text-anchor="end" fill="{TEXT}">{v:.3g}</text>')
        for value, label, colour in panel.refs:
            y = y_of(value)
            out.append(
                f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-dasharray="4 3"/>'
                f'<text x="{LEFT + plot_w - 2}" y="{y - 3:.1f}" text-anchor="end" fill="{colour}">{escape(label)}</text>'
            )
        if marked in labels:
            x = x_of(labels.index(marked))
            colour = BEST if verdict.best else CLOSEST
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y0 + PANEL_H}" stroke="{colour}" stroke-width="2"/>')
        points = [(x_of(i), y_of(v)) for i, v in enumerate(panel.values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{LINE}" stroke-width="2"/>')
        out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{LINE}"/>' for x, y in points)
    y_axis = TOP + len(panels) * (PANEL_H + GAP) + 4
    for i, tick in enumerate(ticks):
        out.append(f'<text x="{x_of(i):.1f}" y="{y_axis}" text-anchor="middle" fill="{TEXT}">{escape(tick)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{y_axis + 16}" text-anchor="middle" fill="{TEXT}">epoch</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_epoch_plot(
    path: Path, epochs: list[Epoch], summaries: dict[str, EpochSummary], verdict: BestEpoch
) -> Path:
    atomic_write_text(Path(path), render_epoch_plot(epochs, summaries, verdict))
    return Path(path)
