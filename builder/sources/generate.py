"""PhotoMaker V2 on diffusers' StableDiffusionXLPipeline: a small driver, not a pipeline subclass.

The base pipeline does the denoising. The driver gives it two sets of text conditioning:
the prompt without the trigger word (and its pooled embedding) for steps up to
``start_merge_step``, then, from a ``callback_on_step_end`` at that step, the prompt with
the class word repeated and fused with the ID tokens (and the pooled embedding of that
expanded prompt), exactly the switch upstream's ``__call__`` makes at ``i > start_merge_step``.
The negative embeddings come from the text-only encoding, as upstream's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

from builder.errors import BuilderError
from builder.sources.photomaker import IDEncoderConfig, PhotoMakerIDEncoder, load_id_encoder
from builder.sources.trigger import add_trigger, expand_trigger, text_only_prompt


@dataclass(frozen=True)
class Job:
    """One picture to make."""

    prompt: str
    negative: str
    seed: int
    steps: int
    guidance: float
    start_merge_step: int
    width: int
    height: int


def start_merge_step(style_strength: float, steps: int) -> int:
    """The demo's rule: style strength (percent) of the steps, at most 30."""
    return min(int(style_strength / 100 * steps), 30)


def clip_pixels(images_rgb: list[np.ndarray]) -> torch.Tensor:
    """(n, 3, 224, 224): CLIPImageProcessor's defaults, as upstream preprocesses the ID photos."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor()
    return processor([Image.fromarray(im) for im in images_rgb], return_tensors="pt").pixel_values


class PhotoMakerSDXL:
    """A StableDiffusionXLPipeline with PhotoMaker V2's ID encoder, LoRA and trigger word."""

    def __init__(self, pipe: StableDiffusionXLPipeline, encoder: PhotoMakerIDEncoder, trigger: str = "img") -> None:
        if pipe.text_encoder is None or pipe.tokenizer is None:
            raise BuilderError("PhotoMaker needs an SDXL base with both text encoders (this one has only the second)")
        width = pipe.unet.config.cross_attention_dim
        if encoder.cross_attention_dim != width:
            raise BuilderError(
                f"the PhotoMaker ID encoder makes {encoder.cross_attention_dim}-d tokens but this UNet reads "
                f"{width}-d text embeddings: the base model is not SDXL"
            )
        self.pipe = pipe
        self.encoder = encoder.to(pipe.device, dtype=pipe.unet.dtype)
        self.trigger = trigger
        add_trigger([pipe.tokenizer, pipe.tokenizer_2], trigger)

    @classmethod
    def load(cls, pipe: StableDiffusionXLPipeline, checkpoint: dict, origin: str, trigger: str = "img", cfg: IDEncoderConfig | None = None) -> PhotoMakerSDXL:
        """Load ``{"id_encoder", "lora_weights"}`` into ``pipe`` (upstream's load_photomaker_adapter)."""
        encoder = load_id_encoder(checkpoint["id_encoder"], origin, cfg)
        try:
            pipe.load_lora_weights(checkpoint["lora_weights"], adapter_name="photomaker")
        except Exception as exc:  # diffusers/peft raise ValueError, KeyError, RuntimeError for a bad LoRA
            raise BuilderError(f"{origin}: lora_weights could not be applied to this SDXL UNet: {exc}") from exc
        # Merged once, as the demo does: no LoRA overhead on every UNet call.
        pipe.fuse_lora()
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        return cls(pipe, encoder, trigger)

    def encode_with_id_slots(self, prompt: str, num_id_images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt embeddings (1, 77, 2048) with the class word repeated, pooled (1, 1280), mask (1, 77)."""
        pipe, device = self.pipe, self.pipe.device
        hidden, masks, pooled = [], [], None
        for tokenizer, text_encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
            expanded = expand_trigger(prompt, tokenizer, self.trigger, num_id_images, self.encoder.num_tokens)
            out = text_encoder(torch.tensor([expanded.input_ids], device=device), output_hidden_states=True)
            pooled = out[0]  # the last encoder's projected pooled output, as SDXL uses
            hidden.append(out.hidden_states[-2])
            masks.append(expanded.class_tokens_mask)
        if masks[0] != masks[1]:
            raise BuilderError(f"the two tokenizers place the class word differently in {prompt!r}")
        embeds = torch.cat(hidden, dim=-1).to(pipe.text_encoder_2.dtype)
        return embeds, pooled, torch.tensor([masks[1]], device=device)

    @torch.inference_mode()
    def generate(self, job: Job, id_pixels: torch.Tensor, id_embeds: torch.Tensor) -> np.ndarray:
        """One image (uint8 BGR). id_pixels (n, 3, 224, 224); id_embeds (n, 512) raw ArcFace."""
        pipe, device = self.pipe, self.pipe.device
        dtype = next(self.encoder.parameters()).dtype
        cfg_on = job.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
        text_only = text_only_prompt(job.prompt, pipe.tokenizer, self.trigger)
        text, negative, pooled_text, negative_pooled = pipe.encode_prompt(
            prompt=text_only, device=device, num_images_per_prompt=1,
            # "" is encoded, as upstream's pipeline does; None would give SDXL's zero embeddings
            do_classifier_free_guidance=cfg_on, negative_prompt=job.negative,
        )
        with_slots, pooled_id, mask = self.encode_with_id_slots(job.prompt, id_pixels.shape[0])
        with_id = self.encoder(
            id_pixels[None].to(device, dtype), with_slots.to(dtype), mask, id_embeds[None].to(device, dtype)
        ).to(text.dtype)
        if cfg_on:
            merged = {"prompt_embeds": torch.cat([negative, with_id]), "add_text_embeds": torch.cat([negative_pooled, pooled_id])}
        else:
            merged = {"prompt_embeds": with_id, "add_text_embeds": pooled_id}

        def merge_id(_pipe, step: int, _t, _tensors: dict) -> dict:
            # The callback runs after step `step`: from the next one on, the ID is in the prompt.
            return merged if step == job.start_merge_step else {}

        out = pipe(
            prompt_embeds=text,
            negative_prompt_embeds=negative,
            pooled_prompt_embeds=pooled_text,
            negative_pooled_prompt_embeds=negative_pooled,
            width=job.width,
            height=job.height,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            # A CPU generator: the same seed gives the same start noise on CPU and GPU.
            generator=torch.Generator("cpu").manual_seed(job.seed),
            callback_on_step_end=merge_id,
            callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds"],
            output_type="np",
        )
        rgb = np.clip(np.nan_to_num(out.images[0]), 0.0, 1.0)
        return np.ascontiguousarray((rgb * 255.0 + 0.5).astype(np.uint8)[:, :, ::-1])
