"""Which torch device and dtype the models run on."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA halves memory and doubles throughput; CPU kernels want fp32."""
    return torch.float16 if device.type == "cuda" else torch.float32
