"""The captioner and tagger interfaces and the registry of backends (``[caption] backend``).

A backend is a sentence captioner (blip, lavis, florence2), a tagger (wd14), or one of
each ("blip+wd14", "florence2+wd14"): ``load_captioner`` gives one object whose
``caption(images)`` returns a ``Caption`` (sentence and tags) per image.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from PIL import Image

from builder import weights as W
from builder.config import Config
from builder.errors import ConfigError
from builder.registry import pick


class Captioner(Protocol):
    name: str

    def caption(self, images: list[np.ndarray]) -> list[str]:
        """One plain-English caption per uint8 BGR image (H, W, 3), in the same order."""
        ...


class Tagger(Protocol):
    name: str

    def tag(self, images: list[np.ndarray]) -> list[list[str]]:
        """The tags of each uint8 BGR image (H, W, 3), most confident first, in the same order."""
        ...


@dataclass(frozen=True)
class Caption:
    """What the backend says about one image; text.fit_caption composes it into the caption line."""

    sentence: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationSettings:
    """The knobs kohya's make_captions.py exposes, read from [caption]."""

    beams: int = 3
    sampling: bool = False  # nucleus sampling (top_p) instead of beam search
    top_p: float = 0.9
    min_length: int = 5
    max_length: int = 75
    seed: int = 0  # sampling is re-seeded per batch so reruns give the same captions

    def __post_init__(self) -> None:
        if self.beams < 1:
            raise ConfigError(f"caption.beams = {self.beams}: must be at least 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"caption.top_p = {self.top_p}: must be in (0, 1]")
        if not 0 <= self.min_length <= self.max_length:
            raise ConfigError(
                f"caption.min_length = {self.min_length}, max_length = {self.max_length}: need 0 <= min <= max"
            )

    @classmethod
    def from_config(cls, cfg: Config) -> GenerationSettings:
        c = cfg.caption
        return cls(c.beams, c.sampling, c.top_p, c.min_length, c.max_length, cfg.runtime.seed)


def to_pil(image: np.ndarray, max_side: int) -> Image.Image:
    """A uint8 BGR image as PIL RGB, first shrunk (area filter) to at most ``max_side``: a
    processor's bicubic resize of a 24-megapixel photo is slow and aliases."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]))


class CaptionBackend:
    """A sentence captioner, a tagger, both, or neither (backend = "none": trigger, class word and tags alone)."""

    def __init__(self, captioner: Captioner | None = None, tagger: Tagger | None = None) -> None:
        self.captioner = captioner
        self.tagger = tagger
        self.name = "+".join(m.name for m in (captioner, tagger) if m is not None) or "none"

    def caption(self, images: list[np.ndarray]) -> list[Caption]:
        sentences = self.captioner.caption(images) if self.captioner and images else [""] * len(images)
        tags = self.tagger.tag(images) if self.tagger and images else [[] for _ in images]
        return [Caption(s, tuple(t)) for s, t in zip(sentences, tags, strict=True)]


def _lazy(module: str, func: str) -> Callable[[Config, torch.device], Any]:
    # Backends import their heavy libraries only when chosen.
    def load(cfg: Config, device: torch.device) -> Any:
        return getattr(importlib.import_module(module), func)(cfg, device)

    return load


CAPTIONERS: dict[str, Callable[[Config, torch.device], Captioner]] = {
    "blip": _lazy("builder.caption.blip", "load_blip"),
    "lavis": _lazy("builder.caption.lavis", "load_lavis"),
    "florence2": _lazy("builder.caption.florence2", "load_florence2"),
}
TAGGERS: dict[str, Callable[[Config, torch.device], Tagger]] = {
    "wd14": _lazy("builder.caption.wd14", "load_wd14"),
}
# caption.backend -> (sentence captioner, tagger); the config's Literal lists the same names.
BACKENDS: dict[str, tuple[str | None, str | None]] = {
    "blip": ("blip", None),
    "lavis": ("lavis", None),
    "florence2": ("florence2", None),
    "wd14": (None, "wd14"),
    "blip+wd14": ("blip", "wd14"),
    "florence2+wd14": ("florence2", "wd14"),
    "none": (None, None),
}


def backend_name(cfg: Config) -> str:
    """``caption.backend`` made definite: "auto" is Florence-2 (detailed caption) for a family whose
    text encoder reads sentences (FLUX's T5), BLIP otherwise."""
    if cfg.caption.backend != "auto":
        return cfg.caption.backend
    from builder.families import family, resolve_family

    return "florence2" if family(resolve_family(cfg.kohya.model_family, cfg.paths.base_model)).SENTENCE_CAPTIONS else "blip"


# The caption key naming each part's model: a registry name, a hub repo id or a local folder.
MODEL_KEYS = {"blip": "model", "florence2": "florence2_model", "wd14": "wd14_model"}


def weights(cfg: Config) -> list[str]:
    """The registry entries ``caption.backend`` loads (BLIP's and the tagger's for "blip+wd14").

    A repo id or folder that is no registry entry has nothing to fetch ahead.
    """
    models = [getattr(cfg.caption, MODEL_KEYS[p]) for p in pick(BACKENDS, backend_name(cfg), "caption.backend")
              if p in MODEL_KEYS]
    return [s.name for m in models for s in W.REGISTRY.values() if s.kind == "hf" and m in (s.name, s.url)]


def load_captioner(cfg: Config, device: torch.device) -> CaptionBackend:
    """The backend ``cfg.caption.backend`` names, on ``device`` (fp16 on CUDA for the torch models)."""
    sentence, tags = pick(BACKENDS, backend_name(cfg), "caption.backend")
    captioner = pick(CAPTIONERS, sentence, "caption.backend")(cfg, device) if sentence else None
    tagger = pick(TAGGERS, tags, "caption.backend")(cfg, device) if tags else None
    return CaptionBackend(captioner, tagger)
