"""GPEN-BFR-512: the official raw-state-dict layout, strict loading, and a real restoration pass.

The full net is 71 M parameters (~5 s per 512 crop on 2 cores), so the random-weight
checkpoint is written, loaded and run once per session and the slow tests share it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from builder.errors import CheckpointError, ConfigError, MissingWeightError
from builder.models.gpen import FullGenerator, use_half_precision
from builder.swap.restorers import load_restorer, weights
from builder.swap.restorers.gpen import GPENRestorer, build, to_crops
from builder.weights import REGISTRY, weight_path
from tests.fixtures.gpen import write_gpen_checkpoint
from tests.fixtures.restore import restorer_config, save_as, tiny_copy, top_square_crop

SEED = 5
NAME = "gpen_bfr_512"
URL = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-512.pth"


gpen_config = partial(restorer_config, NAME, seed=SEED)


@pytest.fixture(scope="module")
def face_crop(source_photo: Path) -> np.ndarray:
    return top_square_crop(source_photo)


@pytest.fixture(scope="module")
def gpen(tmp_path_factory: pytest.TempPathFactory) -> GPENRestorer:
    root = tmp_path_factory.mktemp("gpen_weights")
    write_gpen_checkpoint(weight_path(NAME, str(root)), SEED)
    restorer = load_restorer(gpen_config(root), "cpu")
    assert isinstance(restorer, GPENRestorer)
    return restorer


@pytest.fixture(scope="module")
def gpen_out(gpen: GPENRestorer, face_crop: np.ndarray) -> np.ndarray:
    return gpen.restore(face_crop)


# ---- the official layout ----------------------------------------------------------------------
# Read off upstream's code (yangxy/GPEN face_model/gpen_model.py at 2c73670, FullGenerator(512,
# 512, 8, channel_multiplier=2, narrow=1) as face_gan.py builds it), not off builder.models.gpen.
# isconcat doubles what every activation and ToRGB sees: conv output plus the encoder map.
GPEN_KEYS = {
    "ecd0.0.0.weight": (64, 3, 1, 1),
    "ecd0.0.1.bias": (64,),
    "ecd1.0.0.kernel": (4, 4),  # the downsampling blur, stored as a buffer
    "ecd1.0.1.weight": (128, 64, 3, 3),
    "ecd1.0.2.bias": (128,),
    "ecd7.0.1.weight": (512, 512, 3, 3),
    "final_linear.0.weight": (512, 512 * 4 * 4),
    "final_linear.0.bias": (512,),
    "generator.style.1.weight": (512, 512),
    "generator.style.8.bias": (512,),
    "generator.input.input": (1, 512, 4, 4),
    "generator.conv1.conv.weight": (1, 512, 512, 3, 3),
    "generator.conv1.conv.modulation.weight": (512, 512),
    "generator.conv1.noise.weight": (1,),
    "generator.conv1.activate.bias": (1024,),
    "generator.to_rgb1.conv.weight": (1, 3, 1024, 1, 1),
    "generator.convs.0.conv.weight": (1, 512, 1024, 3, 3),
    "generator.convs.0.conv.blur.kernel": (4, 4),
    "generator.convs.13.conv.weight": (1, 64, 128, 3, 3),
    "generator.convs.13.activate.bias": (128,),
    "generator.to_rgbs.6.conv.weight": (1, 3, 128, 1, 1),
    "generator.to_rgbs.6.upsample.kernel": (4, 4),
    "generator.to_rgbs.6.bias": (1, 3, 1, 1),
}
GPEN_ABSENT = (
    "ecd8.0.1.weight",  # log2(512) - 1 = 8 encoder blocks
    "generator.style.9.weight",
    "generator.convs.1.conv.blur.kernel",  # only the upsampling convs blur
    "generator.to_rgb1.upsample.kernel",
    "generator.convs.14.conv.weight",
    "generator.noises.noise0",  # no stored noise: the encoder maps take its place
)


def test_state_dict_matches_official_layout() -> None:
    net = build()
    state = net.state_dict()
    for key, shape in GPEN_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    for key in GPEN_ABSENT:
        assert key not in state, key
    # counted on upstream's FullGenerator built the same way
    assert len(state) == 163
    assert sum(p.numel() for p in net.parameters()) == 71_005_223


def test_registry_entry() -> None:
    spec = REGISTRY[NAME]
    assert spec.filename == "GPEN-BFR-512.pth" and spec.url == URL
    assert "non-commercial" in spec.license.lower()
    cfg = gpen_config()
    assert weights(cfg) == [NAME]
    cfg.swap.restorer = "best"
    cfg.swap.restorer_candidates = ["codeformer", NAME]
    assert NAME in weights(cfg)


# ---- loading ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_official_format_loads_the_seeded_weights(gpen: GPENRestorer) -> None:
    """The raw state dict, read strictly, holds every tensor of the seeded random-weights net."""
    fresh = load_restorer(gpen_config(random_weights=True), "cpu")
    loaded = gpen.net.state_dict()
    for key, value in fresh.net.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert not gpen.net.training
    assert gpen.name == NAME
    assert gpen.template == "gpen"  # the fused pass gives it GPEN's own crop, not FFHQ's


def test_missing_key_names_key_and_file(tmp_path: Path) -> None:
    state = tiny_copy(build().state_dict())
    del state["generator.convs.5.activate.bias"]
    path = save_as(NAME, tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_restorer(gpen_config(tmp_path), "cpu")
    msg = str(err.value)
    assert "missing keys: generator.convs.5.activate.bias" in msg and str(path) in msg


def test_misshapen_key_names_key_shapes_and_file(tmp_path: Path) -> None:
    state = tiny_copy(build().state_dict())
    # the shape a generator without isconcat would have
    state["generator.to_rgb1.conv.weight"] = torch.zeros(()).expand(1, 3, 512, 1, 1)
    path = save_as(NAME, tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_restorer(gpen_config(tmp_path), "cpu")
    msg = str(err.value)
    assert "generator.to_rgb1.conv.weight (file (1, 3, 512, 1, 1), model (1, 3, 1024, 1, 1))" in msg
    assert str(path) in msg


def test_wrapped_checkpoint_is_refused(tmp_path: Path) -> None:
    """GPEN's file is the bare state dict: a {"params_ema": ...} file is some other model's."""
    path = save_as(NAME, tmp_path, {"params_ema": tiny_copy(build().state_dict())})
    with pytest.raises(CheckpointError) as err:
        load_restorer(gpen_config(tmp_path), "cpu")
    msg = str(err.value)
    assert "unexpected keys: params_ema" in msg and str(path) in msg


def test_missing_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError) as err:
        load_restorer(gpen_config(tmp_path), "cpu")
    assert URL in str(err.value) and str(weight_path(NAME, str(tmp_path))) in str(err.value)


def test_takes_no_options() -> None:
    with pytest.raises(ConfigError, match="takes no options"):
        load_restorer(gpen_config(random_weights=True), "cpu", spec=f"{NAME}:w=0.5")


# ---- restoring --------------------------------------------------------------------------------


def test_post_processing_truncates_like_face_gan() -> None:
    # channel 0 is red in the model's RGB, channel 2 in the BGR crop
    y = torch.tensor([2 * 0.999 - 1, -3.0, 3.0]).view(1, 3, 1, 1)
    # 0.999 * 255 = 254.7: face_gan.py's astype(uint8) keeps 254 (basicsr's rounding gives 255)
    assert np.array_equal(to_crops(y), [[[[255, 0, 254]]]])


@pytest.mark.slow
def test_restores_a_real_face_crop(gpen_out: np.ndarray, face_crop: np.ndarray) -> None:
    assert gpen_out.shape == (1, 512, 512, 3) and gpen_out.dtype == np.uint8
    assert not np.array_equal(gpen_out, face_crop)
    assert gpen_out.std() > 1.0  # a picture, not a constant


@pytest.mark.slow
def test_same_input_same_output(
    gpen: GPENRestorer, gpen_out: np.ndarray, face_crop: np.ndarray
) -> None:
    """No random noise: the encoder maps fill every noise slot, so a face restores the same way."""
    torch.manual_seed(123)  # would change the result if anything drew from the global RNG
    assert np.array_equal(gpen.restore(face_crop), gpen_out)


def test_half_precision_keeps_the_low_resolution_layers_float32() -> None:
    net = use_half_precision(FullGenerator(64, 32, 2, narrow=1 / 16), torch.bfloat16)
    dtype = {name: p.dtype for name, p in net.named_parameters()}
    assert dtype["ecd0.0.0.weight"] == torch.bfloat16  # 64 px
    assert dtype["ecd1.0.1.weight"] == torch.float32  # 32 px and below
    assert dtype["final_linear.0.weight"] == torch.float32
    assert dtype["generator.style.1.weight"] == torch.float32
    assert dtype["generator.convs.4.conv.weight"] == torch.float32  # 32 px
    assert dtype["generator.convs.6.conv.weight"] == torch.bfloat16  # 64 px
    assert dtype["generator.to_rgbs.3.conv.modulation.weight"] == torch.bfloat16
    # the casts at the boundaries make the mixed net run, close to its float32 self
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        mixed = net(x.to(torch.bfloat16))
        full = net.float()(x)
    assert mixed.dtype == torch.bfloat16
    assert torch.isfinite(mixed).all()
    assert (mixed.float() - full).abs().max() < 0.1 * full.abs().max()
