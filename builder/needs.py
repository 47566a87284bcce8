"""Which registry files a configuration will load: the stages' backends each say what they need.

It sits above the stage packages (they import the registry, never this), so adding a backend
means adding it to its stage's registry, and nothing here changes.
"""

from __future__ import annotations

from builder import weights as W
from builder.caption import base as captioners
from builder.config import Config
from builder.swap import restorers, swappers


def clip_bpe_needed(cfg: Config) -> bool:
    """The CLIP tokenizer is built from clip_bpe unless both its users are given a folder."""
    return cfg.caption.clip_tokenizer == W.CLIP_REPO_ID or not cfg.kohya.tokenizer_cache_dir


def needed_for(cfg: Config) -> list[str]:
    """Registry names the given configuration will load.

    Random weights load no model, but the CLIP tokenizer is data, not weights: a
    random-weight run still counts caption tokens with the real one.
    """
    tokenizer = ["clip_bpe"] if clip_bpe_needed(cfg) else []
    # Training and sampling fall back to the registry's SD 1.5 when no base model is given;
    # it is the user's model, not ours, so random weights do not replace it.
    data = tokenizer + ([] if cfg.paths.base_model else ["sd15_base"])
    if cfg.runtime.random_weights:
        return data
    out = swappers.weights(cfg)
    if cfg.faces.detector == "insightface" or cfg.faces.judge == "insightface":
        out.append(cfg.faces.insightface_pack)
    out += restorers.weights(cfg)
    if cfg.swap.needs_parser:
        out.append(f"parsing_{cfg.swap.parser}")
    out += captioners.weights(cfg)
    return list(dict.fromkeys(out + data))
