"""Optional BLIP captioning through Salesforce LAVIS (``backend = "lavis"``).

LAVIS pins old transformers and torch releases, so it is not in requirements.txt; it
works best in its own virtualenv. Its BLIP captioner is ``blip_caption`` with model
types ``large_coco`` and ``base_coco`` (the same COCO-finetuned weights as the
transformers checkpoints, downloaded by LAVIS itself).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from PIL import Image

from builder.caption.base import GenerationSettings
from builder.config import Config
from builder.console import console
from builder.errors import BuilderError

INSTALL_HINT = (
    "the LAVIS backend needs the salesforce-lavis package: `pip install salesforce-lavis` "
    "(best in a separate virtualenv: its old transformers/torch pins conflict with this project's), "
    "or use [caption] backend = \"blip\""
)


def lavis_model_type(model: str) -> str:
    """blip_caption's model type for caption.model: base_coco when it names a base model, else large_coco."""
    if model in ("base_coco", "large_coco"):
        return model
    return "base_coco" if "base" in model.lower() else "large_coco"


class LavisCaptioner:
    name = "lavis"

    def __init__(self, model, vis_processor, device: torch.device, settings: GenerationSettings) -> None:
        self.model = model
        self.vis_processor = vis_processor
        self.device = device
        self.settings = settings

    @torch.inference_mode()
    def caption(self, images: list[np.ndarray]) -> list[str]:
        if not images:
            return []
        batch = torch.stack(
            [self.vis_processor(Image.fromarray(np.ascontiguousarray(im[:, :, ::-1]))) for im in images]
        ).to(self.device)
        s = self.settings
        if s.sampling:
            torch.manual_seed(s.seed)
        return [
            " ".join(c.split())
            for c in self.model.generate(
                {"image": batch}, use_nucleus_sampling=s.sampling, num_beams=s.beams, top_p=s.top_p,
                max_length=s.max_length, min_length=s.min_length,
            )
        ]


def load_lavis(cfg: Config, device: torch.device) -> LavisCaptioner:
    if cfg.runtime.random_weights:
        raise BuilderError('--random-weights is not available with [caption] backend = "lavis"; use "blip"')
    try:
        models = importlib.import_module("lavis.models")
    except ImportError as exc:
        raise BuilderError(f"{INSTALL_HINT} ({exc})") from None
    model_type = lavis_model_type(cfg.caption.model)
    model, vis_processors, _ = models.load_model_and_preprocess(
        name="blip_caption", model_type=model_type, is_eval=True, device=device
    )
    console.print(f"captioner: LAVIS blip_caption/{model_type} on {device}")
    return LavisCaptioner(model, vis_processors["eval"], device, GenerationSettings.from_config(cfg))
