"""RestoreFormer++ / RestoreFormer: official checkpoint layouts, strict loading, fp32 islands, a real pass.

The full net is ~73 M parameters (one 512 forward takes seconds on CPU), so the key handling
is checked on files of one stored number per tensor, and a real forward runs once.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.identity_models import IdentitySwapper, fixed_source
from builder.config import Config, SwapConfig, from_dict
from builder.errors import CheckpointError, ConfigError
from builder.faces import align
from builder.faces.detect import make_detector
from builder.io import load_image
from builder.models.checkpoint import randomize
from builder.models.restoreformer import VectorQuantizer, VQVAEGANMultiHeadTransformer
from builder.swap import restorers
from builder.swap.fused import FFHQ_SIZE, FaceJob, FusedPass
from builder.swap.restorers import restoreformer
from builder.swap.restorers.restoreformer import RestoreFormerRestorer, build
from builder.weights import REGISTRY, weight_path
from tests.fixtures import restore
from tests.fixtures.restore import save_as, tiny_copy
from tests.fixtures.restoreformer import (
    LOSS_KEYS,
    lightning_checkpoint,
    write_restoreformer_pp_checkpoint,
)

SEED = 5


restorer_config = partial(restore.restorer_config, seed=SEED)


def tiny_net(dtype: torch.dtype = torch.float32) -> VQVAEGANMultiHeadTransformer:
    """The real architecture at 64 px: attention at 16 px and (the ++ extra scale) 32 px."""
    net = VQVAEGANMultiHeadTransformer(
        n_embed=64, embed_dim=32, ch=32, ch_mult=(1, 2, 2), resolution=64, z_channels=32
    )
    return randomize(net, SEED).eval().to(dtype)


# ---- checkpoint layouts -------------------------------------------------------------------
# Names and shapes read off upstream's code (RestoreFormerPlusPlus RestoreFormer/modules/vqvae/
# vqvae_arch.py, GFPGAN gfpgan/archs/restoreformer_arch.py) with RestoreFormer.py's constructor
# arguments, not off this repository's module.

SHARED_KEYS = {
    "encoder.conv_in.weight": (64, 3, 3, 3),
    "encoder.down.1.block.0.nin_shortcut.weight": (128, 64, 1, 1),
    "encoder.down.4.downsample.conv.weight": (256, 256, 3, 3),
    "encoder.down.5.block.1.conv2.weight": (512, 512, 3, 3),
    "encoder.down.5.attn.1.q.weight": (512, 512, 1, 1),
    "encoder.mid.attn_1.norm2.weight": (512,),  # built in every attention block, used by none here
    "encoder.conv_out.weight": (256, 512, 3, 3),
    "quant_conv.weight": (256, 256, 1, 1),
    "quantize.embedding.weight": (1024, 256),
    "post_quant_conv.weight": (256, 256, 1, 1),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "decoder.up.5.attn.2.k.weight": (512, 512, 1, 1),  # three res blocks per decoder level
    "decoder.up.4.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "decoder.up.1.upsample.conv.weight": (128, 128, 3, 3),
    "decoder.conv_out.weight": (3, 64, 3, 3),
}
SHARED_ABSENT = (
    "encoder.down.0.block.0.nin_shortcut.weight",  # 64 -> 64
    "encoder.down.4.attn.0.q.weight",  # the encoder attends at 16 px only
    "encoder.down.5.downsample.conv.weight",
    "decoder.up.0.upsample.conv.weight",
    "decoder.up.3.block.0.nin_shortcut.weight",  # 256 -> 256
    "encoder.down.0.block.0.temb_proj.weight",
)
EXTRA_SCALE = "decoder.up.4.attn.2.v.weight"  # RestoreFormer++'s cross-attention at 32 px


@pytest.mark.parametrize(
    ("kwargs", "extra_scale", "n_keys", "n_params"),
    [
        # counts from upstream's VQVAEGANMultiHeadTransformer built with the same arguments
        ({"head_size": 4, "ex_multi_scale_num": 1}, True, 441, 73_472_579),
        ({"head_size": 8, "ex_multi_scale_num": 0}, False, 405, 72_680_003),
    ],
    ids=["restoreformer++", "restoreformer"],
)
def test_state_dict_matches_official_layout(kwargs, extra_scale, n_keys, n_params) -> None:
    net = VQVAEGANMultiHeadTransformer(**kwargs)
    state = net.state_dict()
    for key, shape in SHARED_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    for key in SHARED_ABSENT:
        assert key not in state
    assert (EXTRA_SCALE in state) == extra_scale
    assert len(state) == n_keys
    assert sum(p.numel() for p in net.parameters()) == n_params


def test_restoreformer_pp_file_size_is_the_network_alone() -> None:
    """RestoreFormer++.ckpt's published size is the float32 network plus a small per-tensor
    overhead (codeformer.pth: 363 B/tensor): one 256-channel conv more or less would not fit."""
    state = VQVAEGANMultiHeadTransformer().state_dict()
    tensor_bytes = sum(v.numel() * v.element_size() for v in state.values())
    overhead = REGISTRY["restoreformer++"].size - tensor_bytes
    assert 0 < overhead < 512 * len(state)


# ---- fp32 islands under a half-precision net ------------------------------------------------


def test_attention_and_codebook_distances_run_in_float32(monkeypatch) -> None:
    """A bfloat16 net (CPU's stand-in for CUDA fp16) hands float32 to every attention and gets
    its own dtype back; the 32 px extra scale is among them."""
    seen: list[tuple[torch.dtype, int]] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, q.shape[2]))
        assert q.dtype == k.dtype == v.dtype == torch.float32
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    net = tiny_net(torch.bfloat16)
    with torch.inference_mode():
        out = net(torch.rand(1, 3, 64, 64, dtype=torch.bfloat16) * 2 - 1)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 64, 64)
    assert torch.isfinite(out).all()
    tokens = sorted({n for _, n in seen})
    assert tokens == [256, 1024]  # 16x16 and 32x32 feature maps
    # encoder: 2 at 16 px + mid; decoder: mid + 3 at 16 px + 3 at 32 px
    assert len(seen) == 10


def test_codebook_lookup_survives_values_that_overflow_fp16() -> None:
    """|z|^2 of these 8-channel vectors is ~8e4, past fp16's 65504: a distance taken in fp16
    is inf for every code. Taken in float32 each vector finds its own code."""
    quant = VectorQuantizer(4, 8)
    codes = torch.eye(4, 8) * 200.0 + 50.0
    with torch.no_grad():
        quant.embedding.weight.copy_(codes)
    quant = quant.half()
    order = torch.tensor([2, 0, 3, 1])
    z = (codes[order] + 0.5).half().T.reshape(1, 8, 2, 2)
    assert torch.isinf((z.float() ** 2).sum(1).half()).all()
    out = quant(z)
    assert out.dtype == torch.float16
    assert torch.equal(out.float().reshape(8, 4).T, codes[order])


def test_batch_gives_each_crop_its_own_result() -> None:
    net = tiny_net()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        both = net(x)
        alone = net(x[:1])
    assert torch.allclose(both[:1], alone, atol=1e-5)
    assert (both[0] - both[1]).abs().mean() > 1e-3


# ---- loading the official file formats ---------------------------------------------------------


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("restoreformer_weights")
    write_restoreformer_pp_checkpoint(weight_path("restoreformer++", str(root)), SEED)
    return root


@pytest.fixture(scope="module")
def restoreformer_pp(weights_dir: Path) -> RestoreFormerRestorer:
    torch.set_num_threads(2)
    restorer = restorers.load_restorer(restorer_config("restoreformer++", weights_dir), "cpu")
    assert isinstance(restorer, RestoreFormerRestorer)
    return restorer


def test_lightning_checkpoint_loads_the_seeded_network(restoreformer_pp: RestoreFormerRestorer) -> None:
    """vqvae.* stripped, loss.* skipped: every tensor of the net is the file's, and equals
    what --random-weights builds from the same seed."""
    fresh = restoreformer.load(restorer_config("restoreformer++", random_weights=True), torch.device("cpu"))
    loaded = restoreformer_pp.net.state_dict()
    for key, value in fresh.net.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert not restoreformer_pp.net.training
    assert restoreformer_pp.name == "restoreformer++"


@pytest.mark.parametrize("key", ["params_ema", "params"])
def test_gfpgan_release_loads_from_params_ema_else_params(key: str, tmp_path: Path) -> None:
    state = tiny_copy(build("restoreformer").state_dict())
    state["quantize.embedding.weight"] = torch.full((1024, 256), 0.25)
    # GFPGANer prefers params_ema: a file with both must give the EMA weights
    obj = {key: state} if key == "params" else {"params": tiny_copy(state), key: state}
    save_as("restoreformer", tmp_path, obj)
    restorer = restorers.load_restorer(restorer_config("restoreformer", tmp_path), "cpu")
    assert torch.all(restorer.net.quantize.embedding.weight == 0.25)
    assert EXTRA_SCALE not in restorer.net.state_dict()


def test_restoreformer_v1_network_in_place_of_restoreformer_pp_names_missing_keys(tmp_path: Path) -> None:
    """RestoreFormer's network (no 32 px cross-attention) saved as RestoreFormer++.ckpt."""
    path = save_as("restoreformer++", tmp_path, lightning_checkpoint(tiny_copy(build("restoreformer").state_dict())))
    with pytest.raises(CheckpointError) as err:
        restorers.load_restorer(restorer_config("restoreformer++", tmp_path), "cpu")
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "decoder.up.4.attn.0." in msg


def test_misshapen_key_names_key_shapes_and_file(tmp_path: Path) -> None:
    state = tiny_copy(build("restoreformer++").state_dict())
    state["quantize.embedding.weight"] = torch.zeros(()).expand(512, 256)
    path = save_as("restoreformer++", tmp_path, lightning_checkpoint(state, with_loss=False))
    with pytest.raises(CheckpointError) as err:
        restorers.load_restorer(restorer_config("restoreformer++", tmp_path), "cpu")
    msg = str(err.value)
    assert "quantize.embedding.weight (file (512, 256), model (1024, 256))" in msg and str(path) in msg


def test_keys_outside_the_network_and_the_loss_are_refused(tmp_path: Path) -> None:
    """Only loss.* is skipped by name: a bare state dict inside state_dict is no RestoreFormer++ file."""
    ckpt = lightning_checkpoint(tiny_copy(build("restoreformer++").state_dict()))
    ckpt["state_dict"]["decoder.conv_in.weight"] = torch.zeros(())
    path = save_as("restoreformer++", tmp_path, ckpt)
    with pytest.raises(CheckpointError) as err:
        restorers.load_restorer(restorer_config("restoreformer++", tmp_path), "cpu")
    msg = str(err.value)
    assert "unexpected keys outside 'vqvae.'" in msg and "decoder.conv_in.weight" in msg and str(path) in msg
    assert not any(k in msg for k in LOSS_KEYS)


def test_file_without_a_network_entry_is_refused(tmp_path: Path) -> None:
    path = save_as("restoreformer++", tmp_path, {"model": tiny_copy(build("restoreformer++").state_dict())})
    with pytest.raises(CheckpointError, match="expected a 'params_ema' or 'params' or 'state_dict' entry, found model") as err:
        restorers.load_restorer(restorer_config("restoreformer++", tmp_path), "cpu")
    assert str(path) in str(err.value)


# ---- RestoreFormer's two releases ------------------------------------------------------------
# GFPGAN's RestoreFormer.pth: params_ema (else params), no prefix. RestoreFormerPlusPlus's
# RestoreFormer.ckpt (what its inference.py -v RestoreFormer loads): Lightning, state_dict, vqvae.


def marked_v1_state() -> dict[str, torch.Tensor]:
    state = tiny_copy(build("restoreformer").state_dict())
    state["quantize.embedding.weight"] = torch.full((1024, 256), 0.25)
    return state


@pytest.mark.parametrize("name", ["restoreformer", "restoreformer_ckpt"])
@pytest.mark.parametrize("layout", ["gfpgan", "lightning", "lightning_unprefixed"])
def test_either_release_layout_loads_under_either_name(name: str, layout: str, tmp_path: Path) -> None:
    state = marked_v1_state()
    obj = {
        "gfpgan": {"params_ema": state},
        "lightning": lightning_checkpoint(state),
        "lightning_unprefixed": {"state_dict": state},
    }[layout]
    if layout == "lightning":  # the codebook's usage counter, a training statistic, is skipped by name
        obj["state_dict"]["vqvae.quantize.utility_counter"] = torch.zeros(1024)
    save_as(name, tmp_path, obj)
    restorer = restorers.load_restorer(restorer_config(name, tmp_path), "cpu")
    assert torch.all(restorer.net.quantize.embedding.weight == 0.25)
    assert EXTRA_SCALE not in restorer.net.state_dict()
    assert restorer.name == name


@pytest.mark.parametrize("prefixed", [True, False])
def test_either_layout_is_strict_about_network_keys(prefixed: bool, tmp_path: Path) -> None:
    state = marked_v1_state()
    del state["decoder.conv_out.bias"]
    state["decoder.conv_out.scale"] = torch.zeros(())
    obj = lightning_checkpoint(state, with_loss=False) if prefixed else {"params_ema": state}
    path = save_as("restoreformer_ckpt", tmp_path, obj)
    with pytest.raises(CheckpointError) as err:
        restorers.load_restorer(restorer_config("restoreformer_ckpt", tmp_path), "cpu")
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys: decoder.conv_out.bias" in msg and "unexpected keys: decoder.conv_out.scale" in msg


def test_restoreformer_ckpt_registry_and_file_size_is_the_v1_network_alone() -> None:
    """RestoreFormer.ckpt's pinned size is RestoreFormer's (v1) float32 network plus ~350 B per
    tensor: the release holds that network alone, not RestoreFormer++'s and no losses."""
    spec = REGISTRY["restoreformer_ckpt"]
    assert spec.filename == "RestoreFormer.ckpt" and spec.optional
    assert spec.url == "https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/v1.0.0/RestoreFormer.ckpt"
    state = build("restoreformer_ckpt").state_dict()
    assert EXTRA_SCALE not in state
    overhead = spec.size - sum(v.numel() * v.element_size() for v in state.values())
    assert 0 < overhead < 512 * len(state)
    pp = VQVAEGANMultiHeadTransformer().state_dict()
    assert spec.size < sum(v.numel() * v.element_size() for v in pp.values())


# ---- the backend contract ------------------------------------------------------------------------


def test_backend_names_weights_config_and_options() -> None:
    for name in restoreformer.NAMES:
        assert restorers.BACKENDS[name] is restoreformer
        assert restoreformer.weights(Config(), name) == [name]
        assert REGISTRY[name].license.startswith("Apache-2.0")
        assert from_dict({"swap": {"restorer": name}}).swap.restorer == name
    assert REGISTRY["restoreformer"].optional and not REGISTRY["restoreformer++"].optional
    cfg = Config()
    assert "restoreformer++" in cfg.swap.restorer_candidates
    cfg.swap.restorer = "best"
    assert "restoreformer++" in restorers.weights(cfg)
    with pytest.raises(ConfigError, match="takes no options"):
        restorers.load_restorer(restorer_config("restoreformer++", random_weights=True), "cpu", "restoreformer++:w=0.5")


# ---- restoring real crops ------------------------------------------------------------------------


@pytest.mark.slow
def test_runs_inside_the_fused_pass(restoreformer_pp: RestoreFormerRestorer, data_dir: Path) -> None:
    """On the fused pass's own FFHQ-512 crop of a detected face: a uint8 picture comes back and
    only the pasted face changes. One 512 forward (seconds on CPU)."""
    cfg = Config()
    cfg.faces.detector = "dlib"
    image = load_image(data_dir / "donors" / "TaylorSwift14.jpeg")
    face = make_detector(cfg).detect(image)[0]
    fused = FusedPass(IdentitySwapper(), restoreformer_pp, None, SwapConfig(mouth=False, paste_mask="box"))
    res = fused.run([FaceJob(image, face)], fixed_source(fused, np.ones(512, np.float32)))[0]
    assert res.restorer == "restoreformer++"
    crop = res.restored_crop
    assert crop.shape == (FFHQ_SIZE, FFHQ_SIZE, 3) and crop.dtype == np.uint8
    assert crop.std() > 1.0  # a picture, not a constant
    # random weights leave [-1, 1] often: the output is clamped at both ends
    assert crop.min() == 0 and crop.max() == 255
    touched = align.paste_back(
        np.zeros(image.shape[:2], np.uint8), np.full((FFHQ_SIZE, FFHQ_SIZE), 255, np.uint8), res.m_ffhq, res.mask
    ) > 0
    np.testing.assert_array_equal(res.image[~touched], image[~touched])
    assert np.abs(res.image[touched].astype(int) - image[touched].astype(int)).mean() > 1.0
