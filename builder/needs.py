"""Which registry files a configuration will load: the stages' backends each say what they need.

It sits above the stage packages (they import the registry, never this), so adding a backend
means adding it to its stage's registry, and nothing here changes.
"""

from __future__ import annotations

from builder import weights as W
from builder.caption import base as captioners
from builder.config import Config
from builder.dataset import segmenter
from builder.swap import restorers, swappers


def clip_bpe_needed(cfg: Config) -> bool:
    """The CLIP tokenizer is built from clip_bpe unless both its users are given a folder."""
    return cfg.caption.clip_tokenizer == W.CLIP_REPO_ID or not cfg.kohya.tokenizer_cache_dir


def base_model_names(cfg: Config) -> list[str]:
    """The registry base model train and sample will load, if the configured one is a registry name."""
    from builder.config import DEFAULT_BASE_MODEL

    spec = cfg.paths.base_model or ("" if cfg.runtime.random_weights else DEFAULT_BASE_MODEL)
    return [spec] if spec in W.REGISTRY and W.REGISTRY[spec].family else []


def needed_for(cfg: Config) -> list[str]:
    """Registry names the given configuration will load.

    Random weights load no model, but the CLIP tokenizer is data, not weights: a
    random-weight run still counts caption tokens with the real one.
    """
    tokenizer = ["clip_bpe"] if clip_bpe_needed(cfg) else []
    # A base model named by registry name (or the default one) is fetched like any weight;
    # random weights without a base model train on their family's generated random base instead.
    data = tokenizer + base_model_names(cfg)
    if cfg.runtime.random_weights:
        return data
    out = swappers.weights(cfg)
    if cfg.faces.detector == "insightface" or cfg.faces.judge == "insightface":
        out.append(cfg.faces.insightface_pack)
    out += restorers.weights(cfg)
    if cfg.swap.needs_parser:
        out.append(f"parsing_{cfg.swap.parser}")
    out += captioners.weights(cfg)
    out += segmenter.weights(cfg)
    return list(dict.fromkeys(out + data))
