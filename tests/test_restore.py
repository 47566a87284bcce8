"""Restorers: official checkpoint layouts, strict loading, and real restoration passes on CPU.

The nets are large (CodeFormer ~7 s, GFPGAN ~3.5 s per 512 crop on 2 cores), so each is
written, loaded and run once per session and the tests share the results.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from builder.config import Config
from builder.errors import CheckpointError, ConfigError, MissingWeightError
from builder.swap.restorers import BACKENDS, load_restorer
from builder.swap.restorers.codeformer import CodeFormerRestorer
from builder.swap.restorers.codeformer import build as build_codeformer
from builder.swap.restorers.common import to_crops, to_model_input
from builder.swap.restorers.gfpgan import GFPGANRestorer
from builder.swap.restorers.gfpgan import build as build_gfpgan
from builder.swap.restorers.none import NoRestorer
from builder.weights import REGISTRY, weight_path
from tests.fixtures import restore
from tests.fixtures.restore import (
    save_as,
    tiny_copy,
    top_square_crop,
    write_codeformer_checkpoint,
    write_gfpgan_checkpoint,
)

SEED = 3


restorer_config = partial(restore.restorer_config, seed=SEED)


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def face_crop(source_photo: Path) -> np.ndarray:
    return top_square_crop(source_photo)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("restore_weights")
    write_codeformer_checkpoint(weight_path("codeformer", str(root)), SEED)
    write_gfpgan_checkpoint(weight_path("gfpgan_v1.4", str(root)), SEED)
    return root


@pytest.fixture(scope="session")
def codeformer(weights_dir: Path) -> CodeFormerRestorer:
    restorer = load_restorer(restorer_config("codeformer", weights_dir), "cpu")
    assert isinstance(restorer, CodeFormerRestorer)
    return restorer


@pytest.fixture(scope="session")
def gfpgan(weights_dir: Path) -> GFPGANRestorer:
    restorer = load_restorer(restorer_config("gfpgan", weights_dir), "cpu")
    assert isinstance(restorer, GFPGANRestorer)
    return restorer


@pytest.fixture(scope="session")
def codeformer_out(codeformer: CodeFormerRestorer, face_crop: np.ndarray) -> np.ndarray:
    return codeformer.restore(face_crop)


@pytest.fixture(scope="session")
def gfpgan_out(gfpgan: GFPGANRestorer, face_crop: np.ndarray) -> np.ndarray:
    return gfpgan.restore(face_crop)


# ---- checkpoint layouts -------------------------------------------------------------------
# Expected names and shapes are read off upstream's code (sczhou/CodeFormer
# basicsr/archs/{codeformer,vqgan}_arch.py, TencentARC/GFPGAN gfpgan/archs/
# {gfpganv1_clean,stylegan2_clean}_arch.py) with the constructor arguments of
# inference_codeformer.py and GFPGANer, not off this repository's modules.

CODEFORMER_KEYS = {
    "position_emb": (256, 512),
    "feat_emb.weight": (512, 256),
    "quantize.embedding.weight": (1024, 256),
    "ft_layers.0.self_attn.in_proj_weight": (1536, 512),
    "ft_layers.8.self_attn.out_proj.weight": (512, 512),
    "ft_layers.8.linear1.weight": (1024, 512),  # dim_mlp = 2 * dim_embd
    "idx_pred_layer.0.weight": (512,),
    "idx_pred_layer.1.weight": (1024, 512),
    "encoder.blocks.0.weight": (64, 3, 3, 3),
    "encoder.blocks.4.conv_out.weight": (128, 64, 1, 1),
    "encoder.blocks.17.q.weight": (512, 512, 1, 1),
    "encoder.blocks.24.weight": (256, 512, 3, 3),
    "generator.blocks.0.weight": (512, 256, 3, 3),
    "generator.blocks.2.proj_out.weight": (512, 512, 1, 1),
    "generator.blocks.24.weight": (3, 64, 3, 3),
    "fuse_convs_dict.32.encode_enc.conv1.weight": (256, 512, 3, 3),
    "fuse_convs_dict.64.scale.2.weight": (256, 256, 3, 3),
    "fuse_convs_dict.128.shift.0.bias": (128,),
    "fuse_convs_dict.256.encode_enc.conv_out.weight": (128, 256, 1, 1),
}
CODEFORMER_ABSENT = (
    "idx_pred_layer.1.bias",
    "fuse_convs_dict.16.scale.0.weight",
    "encoder.blocks.25.weight",
)

GFPGAN_KEYS = {
    "conv_body_first.weight": (32, 3, 1, 1),
    "conv_body_down.0.conv1.weight": (32, 32, 3, 3),
    "conv_body_down.0.skip.weight": (64, 32, 1, 1),
    "conv_body_down.6.conv2.weight": (256, 256, 3, 3),
    "final_conv.weight": (256, 256, 3, 3),
    "final_linear.weight": (16 * 512, 256 * 4 * 4),  # different_w: one w per decoder layer
    "conv_body_up.6.conv2.weight": (32, 64, 3, 3),
    "toRGB.6.weight": (3, 32, 1, 1),
    "condition_scale.0.2.weight": (256, 256, 3, 3),  # sft_half: as wide as the U-Net level
    "condition_shift.6.2.weight": (32, 32, 3, 3),
    "stylegan_decoder.style_mlp.1.weight": (512, 512),
    "stylegan_decoder.style_mlp.15.bias": (512,),
    "stylegan_decoder.constant_input.weight": (1, 512, 4, 4),
    "stylegan_decoder.style_conv1.modulated_conv.weight": (1, 512, 512, 3, 3),
    "stylegan_decoder.style_conv1.modulated_conv.modulation.weight": (512, 512),
    "stylegan_decoder.style_convs.0.weight": (1,),
    "stylegan_decoder.style_convs.0.bias": (1, 512, 1, 1),
    "stylegan_decoder.style_convs.13.modulated_conv.weight": (1, 64, 64, 3, 3),
    "stylegan_decoder.to_rgbs.6.modulated_conv.weight": (1, 3, 64, 1, 1),
    "stylegan_decoder.noises.noise0": (1, 1, 4, 4),
    "stylegan_decoder.noises.noise14": (1, 1, 512, 512),
}
GFPGAN_ABSENT = (
    "conv_body_down.0.skip.bias",
    "stylegan_decoder.style_mlp.17.weight",
    "stylegan_decoder.noises.noise15",
)


@pytest.mark.parametrize(
    ("build", "present", "absent", "n_keys", "n_params", "weight"),
    [
        # 94,112,707 parameters, no buffers; 515 tensors
        (build_codeformer, CODEFORMER_KEYS, CODEFORMER_ABSENT, 515, 94_112_707, "codeformer"),
        # 86,444,252 parameters (2,101,248 of them the style MLP, unused with input_is_latent)
        # plus 699,024 numbers in the 15 fixed noise buffers; 285 tensors
        (build_gfpgan, GFPGAN_KEYS, GFPGAN_ABSENT, 285, 86_444_252, "gfpgan_v1.4"),
    ],
    ids=["codeformer", "gfpgan"],
)
def test_state_dict_matches_official_layout(
    build, present, absent, n_keys, n_params, weight
) -> None:
    net = build()
    state = net.state_dict()
    for key, shape in present.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    for key in absent:
        assert key not in state
    assert len(state) == n_keys
    assert sum(p.numel() for p in net.parameters()) == n_params
    # Independent check against the official file: its byte size (from the weight registry)
    # must be the float32 tensor bytes plus a small per-tensor zip/pickle overhead. Measured:
    # codeformer.pth 187,070 B over (363 B/tensor), GFPGANv1.4.pth 59,770 B (210 B/tensor);
    # one missing or extra conv of 256 channels would be off by more than 2 MB.
    tensor_bytes = sum(v.numel() * v.element_size() for v in state.values())
    overhead = REGISTRY[weight].size - tensor_bytes
    assert 0 < overhead < 512 * n_keys


# ---- loading official-format files ----------------------------------------------------------


def test_checkpoint_loads_the_same_weights_as_random_weights_mode(
    codeformer: CodeFormerRestorer, gfpgan: GFPGANRestorer
) -> None:
    """The file written as the official format, read strictly, holds every tensor of the seeded net."""
    for restorer, name in ((codeformer, "codeformer"), (gfpgan, "gfpgan")):
        fresh = load_restorer(restorer_config(name, random_weights=True), "cpu")
        loaded = restorer.net.state_dict()
        for key, value in fresh.net.state_dict().items():
            assert torch.equal(loaded[key], value), key


def test_codeformer_keeps_code_head_in_float32(codeformer: CodeFormerRestorer) -> None:
    assert codeformer.net.idx_pred_layer[1].weight.dtype == torch.float32
    assert not codeformer.net.training


def test_missing_key_names_key_and_file(weights_dir: Path, tmp_path: Path) -> None:
    state = tiny_copy(build_codeformer().state_dict())
    del state["quantize.embedding.weight"]
    path = save_as("codeformer", tmp_path, {"params_ema": state})
    with pytest.raises(CheckpointError) as err:
        load_restorer(restorer_config("codeformer", tmp_path), "cpu")
    assert "quantize.embedding.weight" in str(err.value)
    assert str(path) in str(err.value)
    assert "missing" in str(err.value)


def test_misshapen_key_names_key_shapes_and_file(tmp_path: Path) -> None:
    state = tiny_copy(build_gfpgan().state_dict())
    state["final_linear.weight"] = torch.zeros(()).expand(512, 4096)  # as if different_w=False
    path = save_as("gfpgan_v1.4", tmp_path, {"params_ema": state})
    with pytest.raises(CheckpointError) as err:
        load_restorer(restorer_config("gfpgan", tmp_path), "cpu")
    msg = str(err.value)
    assert "final_linear.weight" in msg and "(512, 4096)" in msg and "(8192, 4096)" in msg
    assert str(path) in msg


def test_checkpoint_without_params_ema_is_refused(tmp_path: Path) -> None:
    state = tiny_copy(build_gfpgan().state_dict())
    path = save_as("gfpgan_v1.4", tmp_path, {"params": state})  # a training-state file, not the released EMA weights
    with pytest.raises(CheckpointError) as err:
        load_restorer(restorer_config("gfpgan", tmp_path), "cpu")
    assert "'params_ema'" in str(err.value) and str(path) in str(err.value)


def test_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError) as err:
        load_restorer(restorer_config("codeformer", tmp_path), "cpu")
    msg = str(err.value)
    assert "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth" in msg
    assert str(weight_path("codeformer", str(tmp_path))) in msg


# ---- restoring real crops -------------------------------------------------------------------


def test_pre_and_post_processing_round_trip_every_value() -> None:
    values = np.arange(256, dtype=np.uint8)
    crop = np.stack([values, values[::-1], np.full(256, 7, np.uint8)], axis=-1)[None, None]
    x = to_model_input(crop, torch.device("cpu"), torch.float32)
    # BGR in, RGB out: channel 0 of the tensor is the crop's red (last) channel
    assert torch.all(x[0, 0] == (7 / 255 - 0.5) / 0.5)
    assert x[0, 2, 0, 0] == -1.0 and x[0, 2, 0, 255] == 1.0
    assert x.is_contiguous()
    assert np.array_equal(to_crops(x), crop)
    # out-of-range outputs clamp like basicsr tensor2img(min_max=(-1, 1))
    assert np.array_equal(
        to_crops(torch.tensor([-3.0, 0.0, 3.0]).view(1, 3, 1, 1)), [[[[255, 128, 0]]]]
    )


@pytest.mark.parametrize("which", ["codeformer", "gfpgan"])
def test_restores_a_real_face_crop(which: str, request, face_crop: np.ndarray) -> None:
    out = request.getfixturevalue(f"{which}_out")
    assert out.shape == (1, 512, 512, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, face_crop)
    assert out.std() > 1.0  # a picture, not a constant


def test_gfpgan_is_deterministic(
    gfpgan: GFPGANRestorer, gfpgan_out: np.ndarray, face_crop: np.ndarray
) -> None:
    """Upstream draws fresh noise per call; here the checkpoint's fixed noise maps are used."""
    assert np.array_equal(gfpgan.restore(face_crop), gfpgan_out)


@pytest.mark.parametrize("which", ["codeformer", "gfpgan"])
def test_batch_gives_each_crop_its_own_result(which: str, request, face_crop: np.ndarray) -> None:
    """Two different crops in one batch: the first must come out as it does alone (per-sample
    style modulation in GFPGAN, sequence-first attention in CodeFormer must not mix samples)."""
    restorer = request.getfixturevalue(which)
    alone = request.getfixturevalue(f"{which}_out")
    other = np.ascontiguousarray(face_crop[:, ::-1, ::-1])
    out = restorer.restore(np.concatenate([face_crop, other]))
    diff = np.abs(out[0].astype(int) - alone[0].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    assert np.abs(out[1].astype(int) - out[0].astype(int)).mean() > 1.0


class Negate(torch.nn.Module):
    """Stands in for the GFPGAN net to check the batching loop: (-x, previews) and a call count."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, return_rgb: bool = False) -> tuple[torch.Tensor, list]:
        self.batches.append(len(x))
        return -x, []


def test_batch_size_splits_the_work(face_crop: np.ndarray) -> None:
    net = Negate()
    restorer = GFPGANRestorer(net, torch.device("cpu"), torch.float32, batch_size=2)
    crops = np.concatenate(
        [face_crop, 255 - face_crop, face_crop // 2, face_crop, face_crop[:, ::-1]]
    )
    out = restorer.restore(crops)
    assert net.batches == [2, 2, 1]
    # -x in [-1, 1] is 255 - v in pixels: every crop came back to its own slot
    assert np.array_equal(out, 255 - crops)
    assert restorer.restore(crops[:0]).shape == (0, 512, 512, 3)
    with pytest.raises(ValueError, match=r"\(N, 512, 512, 3\) uint8"):
        restorer.restore(face_crop[0])
    with pytest.raises(ValueError, match="float32"):
        restorer.restore(face_crop.astype(np.float32))


def test_codeformer_fidelity_weight_changes_output(
    codeformer: CodeFormerRestorer, codeformer_out: np.ndarray, face_crop: np.ndarray
) -> None:
    assert codeformer.w == Config().swap.codeformer_w
    no_fusion = dataclasses.replace(codeformer, w=0.0).restore(face_crop)
    assert np.abs(no_fusion.astype(int) - codeformer_out.astype(int)).mean() > 1.0


def test_none_restorer_returns_a_copy(face_crop: np.ndarray) -> None:
    restorer = load_restorer(restorer_config("none"), "cpu")
    assert isinstance(restorer, NoRestorer)
    out = restorer.restore(face_crop)
    assert np.array_equal(out, face_crop) and out is not face_crop
    out[...] = 0
    assert face_crop.any()


def test_registry_and_bad_names() -> None:
    assert {"codeformer", "gfpgan", "none"} <= set(BACKENDS)
    cfg = restorer_config("restorefromer")
    with pytest.raises(ConfigError, match="restorefromer"):
        load_restorer(cfg, "cpu")
    cfg = restorer_config("none")
    cfg.swap.batch_size = 0
    with pytest.raises(ConfigError, match="batch_size"):
        load_restorer(cfg, "cpu")
