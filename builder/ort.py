"""onnxruntime sessions for every ONNX model: which providers, and which one a session got.

On a CUDA device the CUDA provider comes first, then the CPU. ``onnxruntime-gpu`` loads
CUDA and cuDNN from the ``nvidia-*`` wheels torch installs only once ``preload_dlls`` has
put them in the process, so that runs before the first CUDA session. Where the CUDA
provider cannot load, onnxruntime logs why and runs on the CPU; ``cuda_provider_error``
names the library that is missing, for ``doctor``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from pathlib import Path
from typing import Any

import torch

from builder.device import resolve_device
from builder.errors import BuilderError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def wanted(device: torch.device | str) -> list[str]:
    """The providers a model on ``device`` asks for, best first."""
    kind = device.type if isinstance(device, torch.device) else resolve_device(device).type
    return [CUDA, CPU] if kind == "cuda" else [CPU]


def providers(device: torch.device | str) -> list[str]:
    """``wanted``, less any this onnxruntime build lacks (onnxruntime warns about each)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in wanted(device) if p in available] or [CPU]


@functools.cache
def preload_cuda() -> None:
    """Put the CUDA and cuDNN of the nvidia wheels in the process (a no-op where they are not)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is not None:
        # A library it cannot find is named by cuda_provider_error, and onnxruntime falls back.
        with contextlib.suppress(Exception):
            preload()


def cuda_provider_error() -> str | None:
    """Why onnxruntime's CUDA provider cannot load (the missing library, as the loader says), or None."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (the CPU onnxruntime is installed)"
    preload_cuda()
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not library.is_file():  # Windows names it .dll; onnxruntime reports that itself
        return None
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return str(exc)
    return None


def session(source: Path | bytes, device: torch.device | str, options: Any = None) -> Any:
    """An InferenceSession on ``source`` (a file or a serialised graph) with ``providers(device)``."""
    import onnxruntime as ort

    chosen = providers(device)
    if CUDA in chosen:
        preload_cuda()
    what = str(source) if isinstance(source, Path) else "serialised graph"
    try:
        model = source if isinstance(source, bytes) else str(source)
        return ort.InferenceSession(model, options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        raise BuilderError(f"{what}: cannot load as an ONNX model ({exc})") from exc


def provider_of(sess: Any) -> str:
    """The provider a session runs on (the first it got: onnxruntime drops the ones that failed)."""
    return str(sess.get_providers()[0])
