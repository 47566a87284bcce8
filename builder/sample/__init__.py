"""Verify trained LoRAs: render fixed prompts and seeds per saved epoch and score the faces.

``run_samples(cfg, out, loras=None)`` is the whole stage (``launch.py sample`` and the
last step of ``launch.py run``): it writes ``<out>/samples/grid.png``, ``report.json`` and
one folder of images per epoch, and names the epoch whose faces are most like the source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.sample.run import SampleResult, run_samples

__all__ = ["SampleResult", "run_samples"]


def __getattr__(name: str) -> Any:
    # Lazily: the stage pulls in diffusers, and readers of its small modules (the review
    # page reading the plot's name) should not pay for that.
    if name in __all__:
        from builder.sample import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
