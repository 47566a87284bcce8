"""The LoRA files sd-scripts saved in ``<OUT>/model/``, in training order.

sd-scripts names them ``<output_name>-000001.safetensors`` (every ``save_every_n_epochs``),
``<output_name>-step00000100.safetensors`` (``save_every_n_steps``) and the final
``<output_name>.safetensors``; ``<output_name>-state`` folders hold optimizer state, not LoRAs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuilderError

LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")
_EPOCH = re.compile(r"^(?P<name>.+)-(?P<n>\d{6})$")
_STEP = re.compile(r"^(?P<name>.+)-step(?P<n>\d{8})$")


@dataclass(frozen=True)
class Epoch:
    label: str  # row label and samples/ subfolder: "base", "ohwx-000003", "ohwx"
    lora: Path | None  # None for the base-model control row
    kind: str  # control | epoch | step | final
    number: int | None = None  # epoch or step number where the name carries one

    @property
    def is_control(self) -> bool:
        return self.lora is None


CONTROL = Epoch(label="base", lora=None, kind="control")
_RANK = {"epoch": 0, "step": 1, "final": 2}


def _classify(path: Path) -> Epoch:
    # A LoRA called base.safetensors must not share the control row's folder.
    stem = path.stem if path.stem != CONTROL.label else f"{path.stem}-lora"
    if m := _EPOCH.match(stem):
        return Epoch(label=stem, lora=path, kind="epoch", number=int(m.group("n")))
    if m := _STEP.match(stem):
        return Epoch(label=stem, lora=path, kind="step", number=int(m.group("n")))
    return Epoch(label=stem, lora=path, kind="final")


def find_epochs(model_dir: Path) -> list[Epoch]:
    """Every saved LoRA in ``model_dir``: epochs by number, then step saves, then the final file."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BuilderError(
            f"{model_dir} does not exist: train first (`launch.py train`) or name LoRA files with --lora"
        )
    files = [p for p in model_dir.iterdir() if p.is_file() and p.suffix.lower() in LORA_SUFFIXES]
    if not files:
        raise BuilderError(
            f"no LoRA files (*.safetensors, *.ckpt, *.pt) in {model_dir}: train first or name them with --lora"
        )
    epochs = [_classify(p) for p in files]
    return sorted(epochs, key=lambda e: (_RANK[e.kind], e.number or 0, e.label))


def epochs_from_files(files: list[Path]) -> list[Epoch]:
    """LoRA files named on the command line, in the order given; each must exist."""
    epochs = []
    for path in map(Path, files):
        if not path.is_file():
            raise BuilderError(f"LoRA file {path} does not exist")
        epochs.append(_classify(path))
    labels = [e.label for e in epochs]
    if len(set(labels)) != len(labels):
        raise BuilderError(f"two LoRA files share a name ({', '.join(labels)}); their samples would overwrite each other")
    return epochs
