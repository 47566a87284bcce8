"""FLUX.1 dev/schnell and Chroma base models: their four single files, random ones, and sampling them.

A FLUX base is the set of files sd-scripts' ``flux_train_network.py`` reads (UPSTREAM_FACTS §8):

=====================  ===========================================  ==============================
file                   layout                                       sd-scripts argument
=====================  ===========================================  ==============================
``flux1-dev.safetensors`` / ``flux1-schnell.safetensors`` / ``Chroma1-HD.safetensors``
                       Black Forest Labs' transformer layout         ``pretrained_model_name_or_path``
                       (``double_blocks.N.img_attn.qkv``, ...)
``ae.safetensors``     BFL's autoencoder (``encoder.down.N.block``)  ``ae``
``clip_l.safetensors`` CLIP ViT-L text tower, ``text_model.*``       ``clip_l`` (not for Chroma)
``t5xxl_fp16.safetensors``  T5 v1.1 XXL encoder, ``encoder.block.N``  ``t5xxl``
=====================  ===========================================  ==============================

(comfyanonymous/flux_text_encoders is where the two text encoders are shared in this layout.)

The random base (``--random-weights``) is that set with seeded weights, in those layouts, written
by ``write_random_flux``. What is real and what is reduced (``RANDOM``):

- transformer: the real width (3072 = 24 heads x 128, MLP ratio 4): sd-scripts builds FLUX from
  fixed ``FluxParams`` and diffusers' single-file converter splits ``linear1`` at 3072. The block
  counts are reduced to 1 double + 1 single: sd-scripts' ``load_flow_model`` reads them from the
  checkpoint (``analyze_checkpoint_state``) and so does diffusers' converter. Chroma's
  distilled-guidance approximator is real (5 layers, 5120 wide). Note: sd-scripts builds Chroma
  with its fixed 19 + 38 blocks, so it can train on a reduced Chroma only at full block counts.
- AE: real (BFL's AutoEncoderParams are fixed in sd-scripts).
- CLIP-L: real (sd-scripts' ``load_clip_l`` has a fixed config).
- T5: T5-XXL's real width and 24 layers (``load_t5xxl`` builds the fixed T5-XXL config and loads
  with ``strict=False``: fewer layers would leave weights unloaded), about 9.5 GB; it is written
  one tensor at a time, so generating it needs no more memory than its largest tensor.
- tokenizers (``tokenizer/`` CLIP's, from its BPE file; ``tokenizer_2/`` a T5 tokenizer): the T5 one
  is a small synthetic Unigram vocabulary (T5's special tokens, then characters), since the real
  SentencePiece model cannot be made offline; its ids are valid T5 ids. A real base uses
  google's T5 v1.1 tokenizer (the FLUX repos' ``tokenizer_2/``).

Tests use ``TINY`` (the same transformer width, a 32-wide CLIP and T5) through the same writer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from builder import weights as W
from builder.console import console
from builder.families.common import SampleDefaults
from builder.io import atomic_folder

if TYPE_CHECKING:
    import torch

VARIANTS = ("dev", "schnell", "chroma")
TRANSFORMER_FILE = {"dev": "flux1-dev.safetensors", "schnell": "flux1-schnell.safetensors",
                    "chroma": "Chroma1-HD.safetensors"}
AE_FILE = "ae.safetensors"
CLIP_FILE = "clip_l.safetensors"
T5_FILE = "t5xxl_fp16.safetensors"
CLIP_TOKENIZER = "tokenizer"  # diffusers' FLUX repo subfolder names
T5_TOKENIZER = "tokenizer_2"

# Fixed by both loaders (sd-scripts' FluxParams, diffusers' convert_flux_transformer_checkpoint_to_diffusers).
HIDDEN = 3072
HEADS = 24
HEAD_DIM = HIDDEN // HEADS
AXES_DIM = (16, 56, 56)  # rope axes; they add up to HEAD_DIM
MLP_RATIO = 4
LATENT_CHANNELS = 16  # the AE's z_channels; the transformer reads 2x2 patches of it: 64 inputs
PATCHED = LATENT_CHANNELS * 4
TIME_DIM = 256  # sinusoidal timestep (and guidance) embedding width
# Chroma's approximator (sd-scripts chroma_params, diffusers ChromaTransformer2DModel defaults)
APPROX_IN, APPROX_HIDDEN, APPROX_LAYERS = 64, 5120, 5
# BFL AutoEncoderParams (dev and schnell share them)
AE_CH, AE_CH_MULT, AE_RES_BLOCKS = 128, (1, 2, 4, 4), 2
T5_D_KV = 64  # T5 v1.1 XXL's per-head width (d_kv); heads are told from a checkpoint by it


@dataclass(frozen=True)
class FluxSizes:
    """What a random FLUX base may vary; the defaults are the real models' (FLUX.1 and T5-XXL)."""

    double_blocks: int = 19
    single_blocks: int = 38
    clip_hidden: int = 768  # CLIP ViT-L/14 text tower; its pooled output is the transformer's vector_in
    clip_intermediate: int = 3072
    clip_layers: int = 12
    clip_heads: int = 12
    t5_d_model: int = 4096  # the transformer's txt_in input
    t5_d_ff: int = 10240
    t5_layers: int = 24
    t5_heads: int = 64
    t5_vocab: int = 32128


REAL = FluxSizes()
RANDOM = replace(REAL, double_blocks=1, single_blocks=1)  # what --random-weights writes; see the module doc
TINY = replace(RANDOM, clip_hidden=32, clip_intermediate=37, clip_layers=1, clip_heads=2,
               t5_d_model=32, t5_d_ff=48, t5_layers=1, t5_heads=2)  # tests


def files(variant: str) -> tuple[str, ...]:
    """The files of a ``variant`` base, transformer first (Chroma has no CLIP-L)."""
    check_variant(variant)
    return (TRANSFORMER_FILE[variant], AE_FILE, *(() if variant == "chroma" else (CLIP_FILE,)), T5_FILE)


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"FLUX variant {variant!r}: choose {', '.join(VARIANTS)}")


# ---- tensor names and shapes of each file -----------------------------------------------------
# (name, shape) in file order; a weight of >= 2 dims is drawn N(0, 1/fan_in), a 1-dim "scale" or
# norm weight is 1, a bias is 0 (``_values``).
Spec = list[tuple[str, tuple[int, ...]]]


def _linear(name: str, out: int, inp: int, bias: bool = True) -> Spec:
    return [(f"{name}.weight", (out, inp)), *([(f"{name}.bias", (out,))] if bias else [])]


def _mlp_embedder(name: str, inp: int, hidden: int) -> Spec:
    return _linear(f"{name}.in_layer", hidden, inp) + _linear(f"{name}.out_layer", hidden, hidden)


def _qk_norm(name: str) -> Spec:
    return [(f"{name}.query_norm.scale", (HEAD_DIM,)), (f"{name}.key_norm.scale", (HEAD_DIM,))]


def transformer_spec(variant: str, sizes: FluxSizes) -> Spec:
    """BFL's FLUX transformer (sd-scripts library/flux_models.py ``Flux``; Chroma: chroma_models.py)."""
    check_variant(variant)
    chroma = variant == "chroma"
    mlp = HIDDEN * MLP_RATIO
    spec = _linear("img_in", HIDDEN, PATCHED)
    if chroma:  # modulation comes from the approximator instead of per-block linears
        spec += _linear("distilled_guidance_layer.in_proj", APPROX_HIDDEN, APPROX_IN)
        for i in range(APPROX_LAYERS):
            spec += _mlp_embedder(f"distilled_guidance_layer.layers.{i}", APPROX_HIDDEN, APPROX_HIDDEN)
        spec += [(f"distilled_guidance_layer.norms.{i}.scale", (APPROX_HIDDEN,)) for i in range(APPROX_LAYERS)]
        spec += _linear("distilled_guidance_layer.out_proj", HIDDEN, APPROX_HIDDEN)
    else:
        spec += _mlp_embedder("time_in", TIME_DIM, HIDDEN) + _mlp_embedder("vector_in", sizes.clip_hidden, HIDDEN)
        if variant == "dev":  # schnell is guidance-distilled away: no guidance_in
            spec += _mlp_embedder("guidance_in", TIME_DIM, HIDDEN)
    spec += _linear("txt_in", HIDDEN, sizes.t5_d_model)
    for i in range(sizes.double_blocks):
        for stream in ("img", "txt"):
            p = f"double_blocks.{i}.{stream}"
            if not chroma:
                spec += _linear(f"{p}_mod.lin", 6 * HIDDEN, HIDDEN)
            spec += _linear(f"{p}_attn.qkv", 3 * HIDDEN, HIDDEN) + _qk_norm(f"{p}_attn.norm")
            spec += _linear(f"{p}_attn.proj", HIDDEN, HIDDEN)
            spec += _linear(f"{p}_mlp.0", mlp, HIDDEN) + _linear(f"{p}_mlp.2", HIDDEN, mlp)
    for i in range(sizes.single_blocks):
        p = f"single_blocks.{i}"
        spec += _linear(f"{p}.linear1", 3 * HIDDEN + mlp, HIDDEN) + _linear(f"{p}.linear2", HIDDEN, HIDDEN + mlp)
        spec += _qk_norm(f"{p}.norm")
        if not chroma:
            spec += _linear(f"{p}.modulation.lin", 3 * HIDDEN, HIDDEN)
    spec += _linear("final_layer.linear", PATCHED, HIDDEN)
    if not chroma:
        spec += _linear("final_layer.adaLN_modulation.1", 2 * HIDDEN, HIDDEN)
    return spec


def _conv(name: str, out: int, inp: int, k: int) -> Spec:
    return [(f"{name}.weight", (out, inp, k, k)), (f"{name}.bias", (out,))]


def _norm(name: str, ch: int) -> Spec:
    return [(f"{name}.weight", (ch,)), (f"{name}.bias", (ch,))]


def _resnet(name: str, inp: int, out: int) -> Spec:
    spec = _norm(f"{name}.norm1", inp) + _conv(f"{name}.conv1", out, inp, 3)
    spec += _norm(f"{name}.norm2", out) + _conv(f"{name}.conv2", out, out, 3)
    return spec + (_conv(f"{name}.nin_shortcut", out, inp, 1) if inp != out else [])


def _mid(name: str, ch: int) -> Spec:
    spec = _resnet(f"{name}.block_1", ch, ch) + _norm(f"{name}.attn_1.norm", ch)
    for part in ("q", "k", "v", "proj_out"):
        spec += _conv(f"{name}.attn_1.{part}", ch, ch, 1)
    return spec + _resnet(f"{name}.block_2", ch, ch)


def ae_spec() -> Spec:
    """BFL's AutoEncoder (sd-scripts flux_models.AutoEncoder: Encoder/Decoder, no quant convs)."""
    chs = [AE_CH * m for m in AE_CH_MULT]
    spec = _conv("encoder.conv_in", AE_CH, 3, 3)
    block_in = AE_CH
    for i, out in enumerate(chs):
        for j in range(AE_RES_BLOCKS):
            spec += _resnet(f"encoder.down.{i}.block.{j}", block_in, out)
            block_in = out
        if i != len(chs) - 1:
            spec += _conv(f"encoder.down.{i}.downsample.conv", out, out, 3)
    spec += _mid("encoder.mid", block_in) + _norm("encoder.norm_out", block_in)
    spec += _conv("encoder.conv_out", 2 * LATENT_CHANNELS, block_in, 3)
    block_in = chs[-1]
    spec += _conv("decoder.conv_in", block_in, LATENT_CHANNELS, 3) + _mid("decoder.mid", block_in)
    for i in reversed(range(len(chs))):
        for j in range(AE_RES_BLOCKS + 1):
            spec += _resnet(f"decoder.up.{i}.block.{j}", block_in, chs[i])
            block_in = chs[i]
        if i != 0:
            spec += _conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    return spec + _norm("decoder.norm_out", block_in) + _conv("decoder.conv_out", 3, block_in, 3)


def clip_spec(sizes: FluxSizes) -> Spec:
    """transformers' CLIPTextModel under ``text_model.`` (clip_l.safetensors; sd-scripts load_clip_l)."""
    h, p = sizes.clip_hidden, "text_model"
    spec = [(f"{p}.embeddings.token_embedding.weight", (49408, h)), (f"{p}.embeddings.position_embedding.weight", (77, h))]
    for i in range(sizes.clip_layers):
        q = f"{p}.encoder.layers.{i}"
        for part in ("k_proj", "v_proj", "q_proj", "out_proj"):
            spec += _linear(f"{q}.self_attn.{part}", h, h)
        spec += _norm(f"{q}.layer_norm1", h) + _linear(f"{q}.mlp.fc1", sizes.clip_intermediate, h)
        spec += _linear(f"{q}.mlp.fc2", h, sizes.clip_intermediate) + _norm(f"{q}.layer_norm2", h)
    return spec + _norm(f"{p}.final_layer_norm", h)


def t5_spec(sizes: FluxSizes) -> Spec:
    """transformers' T5EncoderModel (t5xxl_fp16.safetensors: ``shared`` + ``encoder.*``, no biases)."""
    d, inner = sizes.t5_d_model, sizes.t5_heads * T5_D_KV
    spec: Spec = [("shared.weight", (sizes.t5_vocab, d))]
    for i in range(sizes.t5_layers):
        b = f"encoder.block.{i}.layer"
        spec += [(f"{b}.0.SelfAttention.{x}.weight", (inner, d)) for x in ("q", "k", "v")]
        spec += [(f"{b}.0.SelfAttention.o.weight", (d, inner))]
        if i == 0:  # T5 shares block 0's relative position buckets with every block
            spec += [(f"{b}.0.SelfAttention.relative_attention_bias.weight", (32, sizes.t5_heads))]
        spec += [(f"{b}.0.layer_norm.weight", (d,))]
        spec += [(f"{b}.1.DenseReluDense.{x}.weight", (sizes.t5_d_ff, d)) for x in ("wi_0", "wi_1")]
        spec += [(f"{b}.1.DenseReluDense.wo.weight", (d, sizes.t5_d_ff)), (f"{b}.1.layer_norm.weight", (d,))]
    return [*spec, ("encoder.final_layer_norm.weight", (d,))]


# ---- writing -----------------------------------------------------------------------------------

def _values(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    import torch

    if len(shape) >= 2:
        fan_in = 1
        for n in shape[1:]:
            fan_in *= n
        embedding = "embedding" in name or name == "shared.weight" or "relative_attention_bias" in name
        std = 0.02 if embedding and "relative" not in name else fan_in**-0.5
        return torch.randn(shape, generator=gen) * std
    if name.endswith("bias"):
        return torch.zeros(shape)
    return torch.ones(shape)  # norm weights and RMS/QK-norm scales


def write_safetensors(path: Path, spec: Spec, gen: torch.Generator, metadata: dict[str, str] | None = None) -> None:
    """Seeded fp16 tensors as a .safetensors file, written one tensor at a time (T5-XXL is 9.5 GB)."""
    import torch

    header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, shape in spec:
        n = 2
        for s in shape:
            n *= s
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in spec:
            fh.write(_values(name, shape, gen).to(torch.float16).numpy().tobytes())


def write_t5_tokenizer(folder: Path, vocab_size: int) -> Path:
    """A T5 tokenizer (T5TokenizerFast files) with T5's special ids and a character vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(33, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{c}", -3.0) for c in chars] + [(c, -4.0) for c in chars]
    if len(pieces) > vocab_size:
        raise ValueError(f"a T5 vocabulary of {vocab_size} is too small for the synthetic tokenizer")
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0, model_max_length=512)
    fast.save_pretrained(str(folder))
    return folder


def write_random_flux(folder: Path, bpe: Path, seed: int = 0, variant: str = "dev",
                      sizes: FluxSizes = RANDOM) -> Path:
    """Write a random ``variant`` base's files (and its tokenizers) into ``folder`` (made here)."""
    import torch

    from builder.caption.clip_tokenizer import write_clip_tokenizer

    check_variant(variant)
    folder = Path(folder)
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    what = {"random_base": f"flux-{variant} seed {seed}"}
    write_safetensors(folder / TRANSFORMER_FILE[variant], transformer_spec(variant, sizes), gen, what)
    write_safetensors(folder / AE_FILE, ae_spec(), gen, what)
    if variant != "chroma":
        write_safetensors(folder / CLIP_FILE, clip_spec(sizes), gen, what)
        write_clip_tokenizer(folder / CLIP_TOKENIZER, bpe)
    write_safetensors(folder / T5_FILE, t5_spec(sizes), gen, what)
    write_t5_tokenizer(folder / T5_TOKENIZER, sizes.t5_vocab)
    return folder


def random_base_folder(weights_dir: str = "", seed: int = 0, variant: str = "dev") -> Path:
    check_variant(variant)
    return W.cache_dir(weights_dir) / "flux" / f"random-flux-{variant}-seed{seed}"


def complete(folder: Path, variant: str) -> bool:
    """All of a ``variant`` base's files are in ``folder``."""
    return all((folder / f).is_file() for f in files(variant))


def random_base_cached(weights_dir: str, seed: int, variant: str = "dev") -> Path | None:
    folder = random_base_folder(weights_dir, seed, variant)
    return folder if complete(folder, variant) else None


def _size_gb(variant: str, sizes: FluxSizes) -> float:
    return sum(2 * _numel(shape) for _, spec in iter_spec(variant, sizes) for _, shape in spec) / 1e9


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def make_random_base(weights_dir: str, seed: int, variant: str = "dev") -> Path:
    """The cached random ``variant`` base for ``seed``, generated (once) if absent; nothing is downloaded.

    The folder appears only when every file is written (it is renamed into place), so a run that
    was interrupted leaves no half base behind.
    """
    from builder.caption.clip_tokenizer import bpe_file

    folder = random_base_folder(weights_dir, seed, variant)
    if complete(folder, variant):
        return folder
    console.print(f"generating a random-weight FLUX ({variant}, seed {seed}) into {folder}; once, "
                  f"about {_size_gb(variant, RANDOM):.1f} GB")
    with atomic_folder(folder, f"random FLUX {variant}") as tmp:
        write_random_flux(tmp, bpe_file(weights_dir), seed, variant)
    return folder


def iter_spec(variant: str, sizes: FluxSizes) -> Iterator[tuple[str, Spec]]:
    """Each file of a ``variant`` base with its tensors."""
    yield TRANSFORMER_FILE[variant], transformer_spec(variant, sizes)
    yield AE_FILE, ae_spec()
    if variant != "chroma":
        yield CLIP_FILE, clip_spec(sizes)
    yield T5_FILE, t5_spec(sizes)


# ---- sampling through diffusers -------------------------------------------------------------------
# The scheduler configs of the hub repos (FLUX.1-dev / FLUX.1-schnell scheduler/scheduler_config.json;
# Chroma1-HD's is FLUX.1-dev's).
_DEV_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                  "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
SCHEDULER = {
    "dev": _DEV_SCHEDULER,
    "schnell": {**_DEV_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False},
    "chroma": _DEV_SCHEDULER,
}
# FLUX.1-dev vae/config.json: the AE's latents are scaled and shifted
VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [AE_CH * m for m in AE_CH_MULT],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3, "out_channels": 3, "latent_channels": LATENT_CHANNELS, "layers_per_block": AE_RES_BLOCKS,
    "mid_block_add_attention": True, "norm_num_groups": 32, "sample_size": 1024, "scaling_factor": 0.3611,
    "shift_factor": 0.1159, "use_post_quant_conv": False, "use_quant_conv": False, "force_upcast": True,
}
# Sampling defaults. sd-scripts' sample prompt lines give FLUX.1 its distilled guidance with --g and
# CFG with --l (flux_train_utils.sample_image_inference: --g 3.5, --l 1.0 = no CFG, 20 steps);
# diffusers' FluxPipeline takes the distilled guidance as guidance_scale. The pipelines' own
# FlowMatchEulerDiscreteScheduler samples them, as sd-scripts' FLUX sampler ignores --ss.
# dev: 28 steps and guidance 3.5 (FLUX.1-dev's model card and FluxPipeline's defaults); schnell: 4
# steps, no guidance, T5 read to 256 tokens as it was trained; Chroma: real CFG with a negative
# prompt, --g 0 --l 4.0 and 20 steps (sd-scripts' docs, flux_train_network.md).
SAMPLE_DEFAULTS = {
    "dev": SampleDefaults(steps=28, guidance=3.5, sampler="", guidance_options=("g",), line_extra="--l 1"),
    "schnell": SampleDefaults(steps=4, guidance=0.0, sampler="", guidance_options=("g",), line_extra="--l 1",
                              call_kwargs={"max_sequence_length": 256}),
    "chroma": SampleDefaults(steps=20, guidance=4.0, sampler="", guidance_options=("l",), line_extra="--g 0"),
}
# FLUX.1-schnell's repo is not gated; its tokenizer/ (CLIP-L) and tokenizer_2/ (T5 v1.1) are dev's and Chroma's.
TOKENIZER_REPO = "black-forest-labs/FLUX.1-schnell"


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k.removeprefix("model.diffusion_model."): tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118


def _blocks(keys: set[str] | dict[str, object], prefix: str) -> int:
    return 1 + max(int(k.split(".")[1]) for k in keys if k.startswith(prefix))


class BaseFiles(Protocol):
    """A base's single files (builder.families.flux ``FluxBase``); ``clip_l`` is None for Chroma."""

    transformer: Path
    ae: Path
    clip_l: Path | None
    t5xxl: Path
    variant: str


def transformer_config(files: BaseFiles) -> dict[str, object]:
    """The diffusers config of the transformer, read off its checkpoint (block counts, text widths)."""
    shapes = _shapes(files.transformer)
    config: dict[str, object] = {
        "patch_size": 1, "in_channels": PATCHED, "num_layers": _blocks(shapes, "double_blocks."),
        "num_single_layers": _blocks(shapes, "single_blocks."), "attention_head_dim": HEAD_DIM,
        "num_attention_heads": HEADS, "joint_attention_dim": shapes["txt_in.weight"][1],
        "axes_dims_rope": list(AXES_DIM),
    }
    if files.variant == "chroma":
        return {"_class_name": "ChromaTransformer2DModel", **config, "approximator_num_channels": APPROX_IN,
                "approximator_hidden_dim": shapes["distilled_guidance_layer.in_proj.weight"][0],
                "approximator_layers": _blocks({k.split(".", 1)[1] for k in shapes if k.startswith("distilled_guidance_layer.layers.")}, "layers.")}
    return {"_class_name": "FluxTransformer2DModel", **config, "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
            "guidance_embeds": files.variant == "dev"}


def _clip(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = load_file(str(path))
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    hidden = shapes["text_model.final_layer_norm.weight"][0]
    config = CLIPTextConfig(
        hidden_size=hidden, intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=_blocks({k.removeprefix("text_model.encoder.") for k in sd if k.startswith("text_model.encoder.layers.")}, "layers."),
        num_attention_heads=max(1, hidden // 64), projection_dim=hidden, hidden_act="quick_gelu",
        vocab_size=shapes["text_model.embeddings.token_embedding.weight"][0],
        max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,  # CLIP ViT-L's tokenizer ids
    )
    model = CLIPTextModel(config)
    own = set(model.state_dict())
    # transformers 5's CLIPTextModel has no text_model level; the file (and transformers 4) has it
    if not any(k.startswith("text_model.") for k in own):
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if k in own}  # clip_l files may carry text_projection / position_ids
    model.load_state_dict(sd, strict=True)
    return model.to(dtype).eval()


def _t5(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    from safetensors.torch import load_file
    from transformers import T5Config, T5EncoderModel

    sd = load_file(str(path))
    heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1]
    config = T5Config(
        vocab_size=sd["shared.weight"].shape[0], d_model=sd["shared.weight"].shape[1],
        d_kv=sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0] // heads,
        d_ff=sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
        num_layers=_blocks({k.removeprefix("encoder.") for k in sd if k.startswith("encoder.block.")}, "block."),
        num_heads=heads, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
        dense_act_fn="gelu_new", is_gated_act=True, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
    )
    model = T5EncoderModel(config)
    sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])  # one tensor, tied in the model
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path.name} is not a T5 encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(dtype).eval()


def _tokenizer(cls: type, subfolder: str, sources: list[Path | str]) -> object:
    """The first of ``sources`` (folders, then a hub repo id) that has ``subfolder``."""
    for source in sources:
        if isinstance(source, Path):
            if (source / subfolder).is_dir():
                return cls.from_pretrained(str(source / subfolder))
        else:
            return cls.from_pretrained(source, subfolder=subfolder)
    raise FileNotFoundError(f"no {subfolder}/ in {', '.join(map(str, sources))}")


def tokenizer_sources(files: BaseFiles, model_config: str = "") -> list[Path | str]:
    """Where a base's tokenizers are looked for: beside its transformer (a random base has them
    there), ``[sample] model_config`` (a folder or a hub repo id), else TOKENIZER_REPO on the hub."""
    sources: list[Path | str] = [files.transformer.parent]
    if model_config:
        sources.append(Path(model_config).expanduser() if Path(model_config).expanduser().is_dir() else model_config)
    return [*sources, TOKENIZER_REPO]


def load_pipeline(files: BaseFiles, dtype: torch.dtype, sources: list[Path | str]) -> object:
    """The diffusers FluxPipeline (dev, schnell) or ChromaPipeline built from the base's single files.

    The transformer and the AE go through diffusers' own single-file converters (BFL -> diffusers),
    with configs read off the checkpoints; the text encoders are built from their files' shapes.
    ``sources``: where the tokenizers are (folders with ``tokenizer/``/``tokenizer_2/``, then a hub repo).
    """
    import tempfile

    import diffusers
    from transformers import CLIPTokenizer, T5TokenizerFast

    with tempfile.TemporaryDirectory(prefix="flux-config-") as tmp:
        config = Path(tmp)
        for sub, data in (("transformer", transformer_config(files)), ("vae", VAE_CONFIG)):
            (config / sub).mkdir()
            (config / sub / "config.json").write_text(json.dumps(data), encoding="utf-8")
        cls = getattr(diffusers, str(transformer_config(files)["_class_name"]))
        transformer = cls.from_single_file(str(files.transformer), config=tmp, subfolder="transformer",
                                           torch_dtype=dtype, local_files_only=True)
        vae = diffusers.AutoencoderKL.from_single_file(str(files.ae), config=tmp, subfolder="vae",
                                                       torch_dtype=dtype, local_files_only=True)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**SCHEDULER[files.variant])
    t5 = _t5(files.t5xxl, dtype)
    t5_tokenizer = _tokenizer(T5TokenizerFast, T5_TOKENIZER, sources)
    if files.variant == "chroma":
        return diffusers.ChromaPipeline(scheduler=scheduler, vae=vae, text_encoder=t5, tokenizer=t5_tokenizer,
                                        transformer=transformer)
    assert files.clip_l is not None
    return diffusers.FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=_clip(files.clip_l, dtype),
        tokenizer=_tokenizer(CLIPTokenizer, CLIP_TOKENIZER, sources), text_encoder_2=t5, tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


# ---- sd-scripts' LoRA names on diffusers' FLUX/Chroma transformer --------------------------------
# networks/lora_flux.py names every Linear inside a DoubleStreamBlock/SingleStreamBlock of BFL's
# model: ``lora_unet_`` + its path with "_" (``lora_unet_double_blocks_0_img_attn_qkv``); with the
# ``in_dims`` option also the input layers (img_in, time_in, vector_in, guidance_in, txt_in); and
# ``lora_te1_`` + CLIP-L's path (``lora_te3_`` for T5, which diffusers' FLUX LoRA loader does not
# read). BFL fuses q, k, v (and single blocks' MLP input) in one Linear that diffusers keeps apart,
# so such a name maps onto several modules, in the order they are stacked in BFL's weight.
DOUBLE_BLOCK = {
    "img_mod_lin": ("norm1.linear",),
    "txt_mod_lin": ("norm1_context.linear",),
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn_proj": ("attn.to_out.0",),
    "txt_attn_proj": ("attn.to_add_out",),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
}
SINGLE_BLOCK = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}
INPUT_LAYERS = {  # lora_flux in_dims
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in_out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in_in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in_out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in_in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in_out_layer": "time_text_embed.guidance_embedder.linear_2",
}


@dataclass(frozen=True)
class Fused:
    """diffusers' Linears that one BFL Linear is (q, k, v [, mlp]): a LoRA on it has their summed outputs."""

    parts: tuple[torch.nn.Linear, ...]

    @property
    def in_features(self) -> int:
        return self.parts[0].in_features

    @property
    def out_features(self) -> int:
        return sum(p.out_features for p in self.parts)


def _module(root: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def transformer_targets(transformer: torch.nn.Module) -> dict[str, object]:
    """Every ``lora_unet_*`` name sd-scripts may give this transformer, mapped onto its Linears."""
    targets: dict[str, object] = {}
    groups = (("double_blocks", "transformer_blocks", DOUBLE_BLOCK),
              ("single_blocks", "single_transformer_blocks", SINGLE_BLOCK))
    for bfl, ours, names in groups:
        for i, block in enumerate(getattr(transformer, ours)):
            for name, paths in names.items():
                modules = [_module(block, p) for p in paths]
                if all(m is not None for m in modules):  # Chroma's blocks have no modulation Linears
                    targets[f"lora_unet_{bfl}_{i}_{name}"] = modules[0] if len(modules) == 1 else Fused(tuple(modules))  # type: ignore[arg-type]
    for name, path in INPUT_LAYERS.items():
        if (m := _module(transformer, path)) is not None:
            targets[f"lora_unet_{name}"] = m
    return targets


def lora_targets(pipe: object) -> dict[str, object]:
    """``lora_unet_*`` on the transformer and, for FLUX, ``lora_te1_*`` on CLIP-L (networks/lora_flux.py)."""
    from builder.families.common import kohya_module_names

    targets = transformer_targets(pipe.transformer)  # type: ignore[attr-defined]
    if getattr(pipe, "text_encoder_2", None) is not None:  # FluxPipeline: CLIP-L, then T5; Chroma: T5 alone
        targets.update(kohya_module_names("lora_te1_", pipe.text_encoder))  # type: ignore[attr-defined]
    return targets
