"""Verify trained LoRAs: render fixed prompts and seeds per saved epoch and score the faces.

``run_samples(cfg, out, loras=None)`` is the whole stage (``launch.py sample`` and the
last step of ``launch.py run``): it writes ``<out>/samples/grid.png``, ``report.json`` and
one folder of images per epoch, and names the epoch whose faces are most like the source.
"""

from builder.sample.run import SampleResult, run_samples

__all__ = ["SampleResult", "run_samples"]
