"""Loading official checkpoints strictly, and seeded random weights for --random-weights.

A checkpoint that does not match the architecture must fail with the file name and
the offending keys, not load half the weights and produce noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from builder.errors import CheckpointError


def read_state_dict(
    path: Path, key: str | tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint; ``key`` picks the sub-dict the official file keeps weights in
    (e.g. params_ema); given several, the first one the file has."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from None
    if key is not None:
        keys = (key,) if isinstance(key, str) else key
        present = [k for k in keys if isinstance(obj, dict) and k in obj]
        if not present:
            found = ", ".join(sorted(map(str, obj))) if isinstance(obj, dict) else type(obj).__name__
            wanted = " or ".join(f"'{k}'" for k in keys)
            raise CheckpointError(f"{path}: expected a {wanted} entry, found {found}")
        obj = obj[present[0]]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def select_prefix(
    state_dict: dict[str, torch.Tensor], prefix: str, skip: tuple[str, ...], path: Path | str
) -> dict[str, torch.Tensor]:
    """The keys under ``prefix``, with it removed, from a file that holds more than one network
    (a Lightning checkpoint keeps the trained net beside its losses and discriminators).

    Keys under one of the ``skip`` prefixes (which may lie inside ``prefix``) are expected and
    dropped by name; any other key means the file is not what it claims to be.
    """
    foreign = [k for k in state_dict if not k.startswith((prefix, *skip))]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CheckpointError(
            f"{path}: unexpected keys outside '{prefix}' and the skipped {', '.join(skip)}: {shown}"
        )
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix) and not k.startswith(skip)}


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path | str) -> nn.Module:
    """Copy ``state_dict`` into ``model``, naming every missing, unexpected or misshapen key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("misshapen keys", misshapen)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{path}: does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)
    return model


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every parameter from a fixed seed so --random-weights runs are repeatable.

    Float buffers outside normalisation layers (GFPGAN's fixed noise maps) are drawn from
    the seed too: they are made with the global RNG at construction, so they would differ
    between runs. BatchNorm statistics keep their mean 0 / variance 1.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        statistics = {
            id(b) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()
        }
        gen = torch.Generator().manual_seed(seed)
        for buf in model.buffers():
            if id(buf) not in statistics and buf.is_floating_point():
                buf.copy_(torch.randn(buf.shape, generator=gen))
    return model
