"""Florence-2 detailed captions through transformers' native classes (transformers >= 4.56).

``Florence2ForConditionalGeneration`` and ``Florence2Processor`` load the
florence-community conversions (``florence2_large``, the default, or ``florence2_base``),
with no ``trust_remote_code``: microsoft/Florence-2-* ship remote code that breaks on
current transformers. ``caption.florence2_model`` may also be another repo id or a local
``save_pretrained`` folder. The task is ``<DETAILED_CAPTION>`` (a few sentences) or
``<MORE_DETAILED_CAPTION>`` (a paragraph); the output is parsed with the processor's
``post_process_generation``, as transformers' documentation does. Batched, fp16 on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from builder import weights
from builder.caption.base import GenerationSettings, to_pil
from builder.caption.hub import from_pretrained
from builder.config import Config
from builder.console import console, random_weights_banner
from builder.device import model_dtype
from builder.errors import BuilderError, CheckpointError, ConfigError
from builder.models.checkpoint import randomize

FLORENCE2_MODELS = {
    "florence2_large": "florence-community/Florence-2-large",
    "florence2_base": "florence-community/Florence-2-base",
}
_MAX_SIDE = 1536  # shrink big photos (area filter) before the processor's bicubic resize to 768

# The checkpoints' architectures, for --random-weights: DaViT vision towers and BART-base /
# BART-large text models (0.23B and 0.77B parameters). The vocabulary size comes from the
# processor's tokenizer.
_VISION = {
    "base": {"embed_dim": [128, 256, 512, 1024], "num_heads": [4, 8, 16, 32], "num_groups": [4, 8, 16, 32],
             "projection_dim": 768},
    "large": {"embed_dim": [256, 512, 1024, 2048], "num_heads": [8, 16, 32, 64], "num_groups": [8, 16, 32, 64],
              "projection_dim": 1024},
}
_TEXT = {
    "base": {"d_model": 768, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 12,
             "decoder_attention_heads": 12, "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072},
    "large": {"d_model": 1024, "encoder_layers": 12, "decoder_layers": 12, "encoder_attention_heads": 16,
              "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096},
}


def repo_id(model: str) -> tuple[str, str | None]:
    """(what from_pretrained gets, registry name or None) for caption.florence2_model."""
    for name, repo in FLORENCE2_MODELS.items():
        if model in (name, repo):
            spec = weights.REGISTRY.get(name)
            return (spec.url if spec is not None else repo), name
    return model, None


def _fetch_hint(source: str, name: str | None) -> str:
    if name is not None:
        return f"`python launch.py weights --fetch {name}` on a machine with internet"
    return f"`huggingface-cli download {source}` on a machine with internet, or set [caption] florence2_model to a local folder"


def florence2_config(model: str, processor):
    """The Florence2Config of the checkpoint ``model`` names (base sizes if it says 'base', else large)."""
    from transformers import Florence2Config

    size = "base" if "base" in model.lower() else "large"
    tokenizer = processor.tokenizer
    text = {
        "model_type": "bart", **_TEXT[size], "vocab_size": max(len(tokenizer), tokenizer.image_token_id + 1),
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "decoder_start_token_id": tokenizer.eos_token_id,
        "forced_bos_token_id": tokenizer.bos_token_id,
    }
    return Florence2Config(vision_config=_VISION[size], text_config=text, image_token_id=tokenizer.image_token_id)


def build_random_florence2(config, seed: int):
    """Florence2ForConditionalGeneration of ``config``'s architecture with seeded random weights."""
    from transformers import Florence2ForConditionalGeneration
    from transformers.initialization import no_init_weights

    with no_init_weights():  # randomize() sets every weight; the default init would double the cost
        model = Florence2ForConditionalGeneration(config)
    randomize(model, seed)
    model.tie_weights()
    return model


def _check_pair(model, processor, source: str) -> None:
    tokenizer = processor.tokenizer
    if tokenizer.image_token_id != model.config.image_token_id or len(tokenizer) > model.config.text_config.vocab_size:
        raise CheckpointError(
            f"{source}: the processor does not match the model (image token id {tokenizer.image_token_id}, "
            f"{len(tokenizer)} tokens; the model expects {model.config.image_token_id} and at most "
            f"{model.config.text_config.vocab_size} tokens)"
        )


class Florence2Captioner:
    name = "florence2"

    def __init__(self, model, processor, device: torch.device, settings: GenerationSettings, task: str,
                 max_new_tokens: int) -> None:
        self.device = device
        self.dtype = model_dtype(device)
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.processor = processor
        self.settings = settings
        self.task = task
        self.max_new_tokens = max_new_tokens

    def _generate_kwargs(self) -> dict:
        s = self.settings
        kwargs: dict = {"max_new_tokens": self.max_new_tokens}
        if s.sampling:
            kwargs.update(do_sample=True, top_p=s.top_p, num_beams=1)
        else:
            kwargs.update(do_sample=False, num_beams=s.beams)
        return kwargs

    @torch.inference_mode()
    def caption(self, images: list[np.ndarray]) -> list[str]:
        if not images:
            return []
        pils = [to_pil(im, _MAX_SIDE) for im in images]
        inputs = self.processor(text=[self.task] * len(pils), images=pils, return_tensors="pt", padding=True)
        if self.settings.sampling:
            torch.manual_seed(self.settings.seed)
        out = self.model.generate(
            input_ids=inputs["input_ids"].to(self.device),
            attention_mask=inputs["attention_mask"].to(self.device),
            pixel_values=inputs["pixel_values"].to(device=self.device, dtype=self.dtype),
            **self._generate_kwargs(),
        )
        pad = self.processor.tokenizer.pad_token
        texts = self.processor.batch_decode(out, skip_special_tokens=False)
        return [
            " ".join(self.processor.post_process_generation(
                text.replace(pad, ""), task=self.task, image_size=im.size)[self.task].split())
            for text, im in zip(texts, pils, strict=True)
        ]


def load_florence2(cfg: Config, device: torch.device) -> Florence2Captioner:
    """The Florence-2 captioner for cfg.caption.florence2_model; random weights under --random-weights."""
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    c = cfg.caption
    if c.florence2_max_new_tokens < 1:
        raise ConfigError(f"caption.florence2_max_new_tokens = {c.florence2_max_new_tokens}: must be at least 1")
    settings = GenerationSettings.from_config(cfg)
    source, name = repo_id(c.florence2_model)
    hint = _fetch_hint(source, name)
    if cfg.runtime.random_weights:
        random_weights_banner()
        try:  # the processor is small data files: only the cache's, never a download
            processor = Florence2Processor.from_pretrained(source, local_files_only=True)
        except OSError:
            raise BuilderError(
                f"--random-weights Florence-2 needs the processor files of '{source}' in the Hugging Face cache "
                f"(no offline copy of its BART tokenizer ships with any package); get them with "
                f"`huggingface-cli download {source} --include '*.json' '*.txt'`, or use --backend blip"
            ) from None
        model = build_random_florence2(florence2_config(source, processor), cfg.runtime.seed)
    else:
        processor = from_pretrained(Florence2Processor.from_pretrained, source, what="Florence-2 processor",
                                    fetch_hint=hint)
        model = from_pretrained(Florence2ForConditionalGeneration.from_pretrained, source, what="Florence-2 model",
                                fetch_hint=hint, dtype=model_dtype(device))
    _check_pair(model, processor, source)
    kind = "random weights, architecture of" if cfg.runtime.random_weights else "checkpoint"
    console.print(f"captioner: Florence-2 {c.florence2_task} ({kind} {source}) on {device}")
    return Florence2Captioner(model, processor, device, settings, c.florence2_task, c.florence2_max_new_tokens)
