"""Prompt adherence: how well a sample shows its prompt, as CLIP's image-text cosine.

A LoRA that has overfit renders the face and drops the rest of the prompt (the street, the
light, the framing). CLIP ViT-B/32 (OpenAI's weights, through open_clip) scores each sample
against its prompt with the trigger word removed: the trigger means nothing to CLIP, and the
base-model control row, sampled without the LoRA, must be scored against the same text to be
the reference the epochs are read against.
"""

from __future__ import annotations

import pickle
import re
from typing import Any, Protocol

import numpy as np

from builder.config import Config
from builder.errors import BuilderError

WEIGHT = "clip_vit_b32"  # builder.weights registry name
ARCH = "ViT-B-32"  # open_clip's name for the architecture of OpenAI's ViT-B-32.pt
RANDOM_SEED = 0


class Adherence(Protocol):
    name: str

    def score(self, image_bgr: np.ndarray, text: str) -> float:
        """Cosine of the image and text embeddings (CLIP's scale: about 0.3 for a good match)."""
        ...


def strip_trigger(prompt: str, trigger: str) -> str:
    """The prompt without the trigger word (whole word, any case), spaces and commas tidied."""
    if not trigger:
        return prompt.strip()
    text = re.sub(rf"(?<![\w]){re.escape(trigger)}(?![\w])", " ", prompt, flags=re.IGNORECASE)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+,", ",", text)
    return re.sub(r"^[\s,]+|[\s,]+$", "", text)


def needed_weights(cfg: Config) -> list[str]:
    """The registry file the sample stage's adherence scorer loads (random weights load none)."""
    return [WEIGHT] if cfg.sample.adherence and cfg.sample.score and not cfg.runtime.random_weights else []


class ClipAdherence:
    """open_clip's CLIP ViT-B/32 with OpenAI's weights; text embeddings are cached per prompt."""

    name = "CLIP ViT-B/32 (OpenAI)"

    def __init__(self, model: Any, device: str) -> None:
        import open_clip
        import torch

        self.torch = torch
        self.model = model.eval()
        self.device = device
        self.transform = open_clip.image_transform(model.visual.image_size, is_train=False)
        self.tokenizer = open_clip.get_tokenizer(ARCH)  # the BPE file ships in the package
        self._texts: dict[str, Any] = {}

    @classmethod
    def load(cls, cfg: Config, device: str) -> ClipAdherence:
        """OpenAI's file from the weights cache, or with --random-weights a seeded random CLIP."""
        try:
            import open_clip
            import torch
        except ImportError:
            raise BuilderError(
                "prompt adherence needs open-clip-torch: pip install open-clip-torch (or [sample] adherence = false)"
            ) from None
        if cfg.runtime.random_weights:
            torch.manual_seed(RANDOM_SEED)
            # OpenAI's CLIP uses QuickGELU; the -quickgelu config is that architecture in open_clip.
            return cls(open_clip.create_model(f"{ARCH}-quickgelu", device=device), device)
        from builder.weights import require

        path = require(WEIGHT, cfg.runtime.weights_dir)
        precision = "fp32" if device == "cpu" else "fp16"
        try:
            model = open_clip.load_openai_model(str(path), precision=precision, device=device)
        except (RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            raise BuilderError(f"{path} is not a CLIP ViT-B/32 checkpoint: {exc}") from None
        if model.visual.image_size != (224, 224) and model.visual.image_size != 224:
            raise BuilderError(f"{path}: expected ViT-B/32 at 224 px, got image size {model.visual.image_size}")
        return cls(model, device)

    def _text(self, text: str) -> Any:
        if text not in self._texts:
            with self.torch.no_grad():
                feats = self.model.encode_text(self.tokenizer([text]).to(self.device)).float()
            self._texts[text] = feats / feats.norm(dim=-1, keepdim=True)
        return self._texts[text]

    def score(self, image_bgr: np.ndarray, text: str) -> float:
        from PIL import Image

        pixels = self.transform(Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1])))
        dtype = next(self.model.parameters()).dtype
        with self.torch.no_grad():
            feats = self.model.encode_image(pixels.unsqueeze(0).to(self.device, dtype)).float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return float((feats * self._text(text)).sum())
