"""The original (SGM/LDM) module path of a diffusers UNet module: the names SDXL LoRAs carry.

sd-scripts trains SD 1.5 on a UNet with diffusers' module names, but SDXL on its own copy of
Stability's SGM UNet (library/sdxl_original_unet.py), so an SDXL LoRA from
sdxl_train_network.py names the UNet's modules ``input_blocks.4.1.transformer_blocks.0...``
where diffusers has ``down_blocks.1.attentions.0.transformer_blocks.0...``. diffusers'
``load_lora_weights`` maps them back (``_maybe_map_sgm_blocks_to_diffusers``); this is the
same correspondence the other way, for checking a LoRA before it is applied.
"""

from __future__ import annotations

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
TOP = {
    "conv_in": "input_blocks.0.0",
    "conv_out": "out.2",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _resnet(rest: list[str]) -> str:
    return ".".join([RESNET.get(rest[0], rest[0]), *rest[1:]])


def _inner(kind: str, rest: list[str]) -> str:
    """A resnet's (slot 0) or a transformer's (slot 1) module path inside an SGM block."""
    return f"0.{_resnet(rest)}" if kind == "resnets" else ".".join(["1", *rest])


def sgm_unet_path(path: str, layers_per_block: int, up_has_attention: list[bool]) -> str | None:
    """``path`` (a diffusers UNet module path) in SGM names; None for modules SGM has no name for."""
    if path in TOP:
        return TOP[path]
    part = path.split(".")
    slot = layers_per_block + 1  # SGM numbers resnet/attention pairs and samplers in one run
    try:
        if part[0] == "mid_block":  # SGM: [resnet, transformer, resnet]
            if part[1] == "resnets":
                return f"middle_block.{2 * int(part[2])}.{_resnet(part[3:])}"
            return f"middle_block.1.{'.'.join(part[3:])}"
        block, kind = int(part[1]), part[2]
        if part[0] == "down_blocks":
            if kind == "downsamplers":
                return f"input_blocks.{(block + 1) * slot}.0.op"
            return f"input_blocks.{1 + block * slot + int(part[3])}.{_inner(kind, part[4:])}"
        if part[0] == "up_blocks":
            if kind == "upsamplers":
                return f"output_blocks.{block * slot + layers_per_block}.{2 if up_has_attention[block] else 1}.conv"
            return f"output_blocks.{block * slot + int(part[3])}.{_inner(kind, part[4:])}"
    except (IndexError, KeyError, ValueError):
        return None
    return None
