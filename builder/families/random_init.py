"""What the families' random base models share: seeded weights in fp16, CLIP text encoders in
the hub's file layout, and a folder that is either complete or absent.

Each family's ``make_random_base`` builds its real components with these and writes them as
the diffusers folder its hub repo holds, so train (sd-scripts) and sample (diffusers) load it
as they load the real one; with --random-weights nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.console import console
from builder.families.common import cached
from builder.io import atomic_folder

if TYPE_CHECKING:  # torch is imported where a model is made: the family modules stay light to import
    import torch

DTYPE = "float16"  # as the fp16 checkpoints; halves the size of fp32


def fill(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Seeded values that keep activations in range: N(0, 1/fan_in) weights, unit norms, zero biases."""
    import torch

    for name, p in model.named_parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            std = 0.02 if "embedding" in name else fan_in**-0.5
            p.data.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("weight"):
            p.data.fill_(1.0)
        else:
            p.data.zero_()


def empty(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Build a model straight in fp16 without first allocating it in fp32 (SDXL's UNet is 10 GB fp32)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, DTYPE))
    try:
        with torch.device("meta"):
            model = build()
    finally:
        torch.set_default_dtype(previous)
    return model.to_empty(device="cpu")


def save_random(folder: Path, build: Callable[[], Any], gen: torch.Generator) -> None:
    """One diffusers component (UNet, VAE) with seeded random weights, saved with save_pretrained."""
    model = empty(build)
    fill(model, gen)
    model.save_pretrained(folder, safe_serialization=True)


def clip_text_config(
    architecture: str, hidden: int, intermediate: int, layers: int, heads: int, act: str, projection: int,
    token_ids: tuple[int, int, int] = (0, 2, 1),
) -> dict[str, Any]:
    """config.json as the hub repos' text_encoder/ folders have it (read by transformers 4 and 5).

    ``token_ids``: bos, eos, pad as those files give them (the tokenizer's ids are what count).
    """
    bos, eos, pad = token_ids
    return {
        "architectures": [architecture], "model_type": "clip_text_model", "hidden_act": act,
        "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": projection,
        "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0,
        "initializer_range": 0.02, "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad,
        "torch_dtype": "float16",
    }


def clip_text_model(config: dict[str, Any]) -> torch.nn.Module:
    import transformers

    cls = getattr(transformers, config["architectures"][0])
    kwargs = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")}
    return cls(transformers.CLIPTextConfig(**kwargs))


def save_text_encoder(folder: Path, config: dict[str, Any], gen: torch.Generator) -> None:
    """A random CLIP text encoder as the hub's files: model.safetensors under the ``text_model.`` prefix."""
    from safetensors.torch import save_file

    model = empty(lambda: clip_text_model(config))
    fill(model, gen)
    folder.mkdir(parents=True)
    sd = model.state_dict()
    # transformers 5 dropped CLIPTextModel's text_model level; the hub's files (and
    # sd-scripts' transformers 4) keep it, and transformers 5 still reads that layout.
    prefix = "" if next(iter(sd)).startswith("text_model.") else "text_model."
    save_file({(k if k.startswith("text_model.") or k == "text_projection.weight" else prefix + k): v.contiguous()
               for k, v in sd.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def generate_once(folder: Path, what: str, size: str, write: Callable[[Path], None]) -> Path:
    """``folder`` if complete, else written by ``write(tmp)`` in a scratch folder and renamed into place."""
    if cached(folder) is not None:
        return folder
    console.print(f"generating a random-weight {what} into {folder}; once, about {size}")
    # a folder without model_index.json is an unfinished one: atomic_folder replaces it
    with atomic_folder(folder, f"random {what}") as tmp:
        write(tmp)
    return folder
