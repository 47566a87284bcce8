"""CodeFormer (sczhou/CodeFormer), codeformer.pth from release v0.1.0, on the FFHQ-512 crop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from builder.config import Config
from builder.device import model_dtype
from builder.errors import ConfigError
from builder.models.base import Restorer
from builder.models.codeformer import CodeFormer
from builder.swap.restorers.common import TorchRestorer, prepare_net

NAMES = ("codeformer",)


@dataclass
class CodeFormerRestorer(TorchRestorer):
    w: float = 0.7  # fidelity: 0 trusts the learned codebook, 1 keeps most of the input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, w=self.w, adain=True)[0]


def build() -> CodeFormer:
    # the arguments of inference_codeformer.py for codeformer.pth
    return CodeFormer(
        dim_embd=512,
        codebook_size=1024,
        n_head=8,
        n_layers=9,
        connect_list=["32", "64", "128", "256"],
    )


def weights(cfg: Config, name: str) -> list[str]:
    return ["codeformer"]


def _fidelity(cfg: Config, options: dict[str, str]) -> float:
    unknown = set(options) - {"w"}
    if unknown:
        raise ConfigError(f"codeformer takes only the option w (fidelity), got {', '.join(sorted(unknown))}")
    try:
        w = float(options.get("w", cfg.swap.codeformer_w))
    except ValueError:
        raise ConfigError(f"codeformer:w={options['w']!r} is not a number") from None
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"codeformer fidelity w must be in [0, 1], got {w}")
    return w


def _spec(w: float, options: dict[str, str]) -> str:
    return f"codeformer:w={w:g}" if options else "codeformer"


def load(cfg: Config, device: torch.device, name: str = "codeformer", **options: str) -> Restorer:
    w = _fidelity(cfg, options)
    net = prepare_net(build, "codeformer", cfg, device)
    # the code-prediction head picks one of 1024 codebook entries per token: keep that choice in float32
    net.idx_pred_layer.float()
    return CodeFormerRestorer(net, device, model_dtype(device), cfg.swap.batch_size, name=_spec(w, options), w=w)


def variant(restorer: CodeFormerRestorer, cfg: Config, **options: str) -> Restorer:
    """The same loaded net at another fidelity: "best" can try several w without a second copy."""
    w = _fidelity(cfg, options)
    return dataclasses.replace(restorer, w=w, name=_spec(w, options))
