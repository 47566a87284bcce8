"""GHOST swapper: architectures match the official checkpoints, loading is strict, swaps are GHOST's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from builder.config import Config
from builder.errors import CheckpointError, MissingWeightError
from builder.faces import align
from builder.models.checkpoint import load_strict, read_state_dict
from builder.models.ghost import AEINet
from builder.models.iresnet import iresnet100
from builder.swap.swappers import load_swapper
from builder.swap.swappers.ghost import GhostSwapper
from builder.weights import require
from tests.fixtures.ghost import write_arcface_checkpoint, write_ghost_checkpoint

torch.set_num_threads(2)
CPU = torch.device("cpu")

# Counted on ai-forever/ghost network/AEI_Net.py (AEI_Net('unet', num_blocks=N, c_id=512))
# and insightface arcface_torch backbones/iresnet.py (iresnet100), instantiated side by side
# with these modules: identical key sets and shapes, identical outputs for shared weights.
UPSTREAM_GENERATOR = {1: (223, 128_469_133), 2: (311, 184_343_381), 3: (399, 240_217_629)}
UPSTREAM_IRESNET100 = (925, 65_156_160)


def _cfg(weights_dir: Path | str = "", generator: str = "G_unet_1block", random: bool = False, seed: int = 0) -> Config:
    cfg = Config()
    cfg.runtime = dataclasses.replace(cfg.runtime, weights_dir=str(weights_dir), random_weights=random, seed=seed)
    cfg.swap = dataclasses.replace(cfg.swap, generator=generator, batch_size=2)
    return cfg


@pytest.fixture(scope="session")
def ghost_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ghost_weights")
    write_ghost_checkpoint(folder, num_blocks=1, seed=0)
    write_arcface_checkpoint(folder, seed=0)
    return folder


@pytest.fixture(scope="session")
def swapper(ghost_weights: Path) -> GhostSwapper:
    return load_swapper(_cfg(ghost_weights), CPU)


@pytest.fixture(scope="session")
def donor_crops(donor_photos: list[Path]) -> np.ndarray:
    images = [cv2.imread(str(p)) for p in donor_photos[:2]]
    return np.stack([cv2.resize(im, (256, 256), interpolation=cv2.INTER_AREA) for im in images])


@pytest.mark.parametrize("num_blocks", [1, 2, 3])
def test_generator_keys_and_shapes_match_upstream(num_blocks: int) -> None:
    sd = AEINet(num_blocks=num_blocks).state_dict()
    n_keys, n_params = UPSTREAM_GENERATOR[num_blocks]
    assert len(sd) == n_keys
    assert sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == n_params
    assert all(k.startswith(("encoder.", "generator.")) for k in sd)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder.conv1.0.weight"] == (32, 3, 4, 4)
    assert shapes["encoder.conv7.1.running_var"] == (1024,)
    assert shapes["encoder.deconv1.deconv.weight"] == (1024, 1024, 4, 4)  # ConvTranspose: (in, out, k, k)
    assert shapes["encoder.deconv6.bn.weight"] == (32,)
    assert shapes["generator.up1.weight"] == (512, 1024, 2, 2)
    assert shapes["generator.AADBlk1.add_blocks.0.fc1.weight"] == (1024, 512)
    assert shapes["generator.AADBlk2.add_blocks.0.conv1.weight"] == (1024, 2048, 1, 1)
    last = 3 * num_blocks - 1  # the conv of the last (AADLayer, ReLU, conv) triple
    assert shapes[f"generator.AADBlk8.add_blocks.{last}.weight"] == (3, 64, 3, 3)
    assert shapes["generator.AADBlk8.last_add_block.2.weight"] == (3, 64, 3, 3)
    assert shapes["generator.AADBlk8.add_blocks.0.conv_h.weight"] == (1, 64, 1, 1)
    assert "generator.AADBlk1.last_add_block.0.fc1.weight" not in shapes  # 1024 -> 1024: no shortcut conv
    assert f"generator.AADBlk1.add_blocks.{last + 1}.fc1.weight" not in shapes


def test_iresnet100_keys_and_shapes_match_upstream() -> None:
    sd = iresnet100().state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert len(sd) == UPSTREAM_IRESNET100[0]
    assert sum(p.numel() for p in iresnet100().parameters()) == UPSTREAM_IRESNET100[1]
    assert shapes["fc.weight"] == (512, 25088)
    assert shapes["features.running_mean"] == (512,)
    assert shapes["prelu.weight"] == (64,)
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1)
    assert shapes["layer3.29.conv2.weight"] == (256, 256, 3, 3)
    assert "layer3.30.conv1.weight" not in shapes and "layer2.12.bn3.bias" in shapes  # 3-13-30-3 blocks


@pytest.mark.parametrize("num_blocks", [2, 3])  # 1 block: the session swapper loads it
def test_official_files_load_unchanged_for_every_generator(tmp_path: Path, num_blocks: int) -> None:
    path = write_ghost_checkpoint(tmp_path, num_blocks=num_blocks, seed=num_blocks)
    assert path.name == f"G_unet_{num_blocks}blocks.pth"
    assert path == require(f"ghost_unet_{num_blocks}blocks", str(tmp_path))
    sd = read_state_dict(path)
    assert type(sd).__name__ == "OrderedDict" and "generator.up1.bias" in sd  # a raw state dict
    path.unlink()  # keep at most one generator file on disk at a time
    model = load_strict(AEINet(num_blocks=num_blocks), sd, path)
    assert torch.equal(model.state_dict()["generator.up1.weight"], sd["generator.up1.weight"])


def test_generator_file_with_other_block_count_names_keys_and_file(ghost_weights: Path, tmp_path: Path) -> None:
    # A 1-block file saved under the 2-block name: every second-triple key is missing.
    (tmp_path / "ghost").mkdir()
    (tmp_path / "ghost" / "G_unet_2blocks.pth").symlink_to(ghost_weights / "ghost" / "G_unet_1block.pth")
    (tmp_path / "ghost" / "backbone.pth").symlink_to(ghost_weights / "ghost" / "backbone.pth")
    with pytest.raises(CheckpointError) as err:
        load_swapper(_cfg(tmp_path, generator="G_unet_2blocks"), CPU)
    msg = str(err.value)
    assert "G_unet_2blocks.pth" in msg and "missing keys" in msg
    assert "generator.AADBlk1.add_blocks.3.conv1.weight" in msg
    assert "misshapen keys" in msg  # the 1-block file's add_blocks.2 conv maps cin -> cout


def test_arcface_missing_or_misshapen_key_names_key_and_file(ghost_weights: Path, tmp_path: Path) -> None:
    sd = torch.load(ghost_weights / "ghost" / "backbone.pth", map_location="cpu", weights_only=True)
    (tmp_path / "ghost").mkdir()
    (tmp_path / "ghost" / "G_unet_1block.pth").symlink_to(ghost_weights / "ghost" / "G_unet_1block.pth")
    target = tmp_path / "ghost" / "backbone.pth"

    missing = {k: v for k, v in sd.items() if k != "layer4.2.prelu.weight"}
    torch.save(missing, target)
    with pytest.raises(CheckpointError, match=r"backbone\.pth.*missing keys: layer4\.2\.prelu\.weight"):
        load_swapper(_cfg(tmp_path), CPU)

    misshapen = dict(sd, **{"fc.weight": torch.zeros(512, 512 * 8 * 8)})  # a 128-px iresnet's fc
    torch.save(misshapen, target)
    with pytest.raises(CheckpointError, match=r"backbone\.pth.*fc\.weight \(file \(512, 32768\), model \(512, 25088\)\)"):
        load_swapper(_cfg(tmp_path), CPU)


def test_missing_weights_name_the_file_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightError, match=r"G_unet_2blocks\.pth.*ghost_unet_2blocks"):
        load_swapper(_cfg(tmp_path, generator="G_unet_2blocks"), CPU)


def test_swap_shape_dtype_determinism_and_identity_conditioning(swapper: GhostSwapper, donor_crops: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    id_a = rng.normal(size=512).astype(np.float32) * 1.5
    id_b = rng.normal(size=512).astype(np.float32) * 1.5
    out_a = swapper.swap(donor_crops, id_a)
    assert out_a.shape == donor_crops.shape and out_a.dtype == np.uint8
    alone = swapper.swap(donor_crops[:1], id_a).astype(int)  # batch of 1: other float summation order
    assert np.abs(alone - out_a[:1]).max() <= 1 and np.mean(alone != out_a[:1]) < 1e-3
    out_b = swapper.swap(donor_crops[:1], id_b)
    assert np.array_equal(swapper.swap(donor_crops[:1], id_b), out_b)  # deterministic
    assert np.abs(out_b.astype(int) - out_a[:1]).mean() > 1.0  # the identity steers the generator
    assert np.abs(out_a.astype(int) - donor_crops).mean() > 1.0  # not a pass-through
    assert not np.array_equal(out_a[0], out_a[1])  # the target's attributes matter too


def test_random_weights_equal_the_fixture_file_with_the_same_seed(swapper: GhostSwapper) -> None:
    rand = load_swapper(_cfg(random=True, seed=0), CPU)
    for a, b in ((rand.generator, swapper.generator), (rand.arcface, swapper.arcface)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_embed_source_is_ghost_source_path(swapper: GhostSwapper, donor_crops: np.ndarray) -> None:
    emb = swapper.embed_crops(donor_crops)
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    norms = np.linalg.norm(emb, axis=1)
    # Raw, not unit-normalised; and settled BatchNorms: unsettled random weights give ~1e8.
    assert np.all((norms > 5) & (norms < 5000))
    # GHOST: RGB, (x / 255 - 0.5) / 0.5, bilinear align_corners=True resize to 112, raw iresnet100.
    rgb = torch.from_numpy(donor_crops[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate((rgb - 0.5) / 0.5, size=(112, 112), mode="bilinear", align_corners=True)
    with torch.no_grad():
        ref = swapper.arcface(x).numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-4)
    # Colour order matters: the BGR crop read as RGB is another face to ArcFace.
    swapped_channels = swapper.embed_crops(np.ascontiguousarray(donor_crops[:1, ..., ::-1]))
    assert np.abs(swapped_channels[0] - emb[0]).max() > 1e-2


def test_embed_source_warps_the_photo_into_the_swap_crop(swapper: GhostSwapper, donor_crops: np.ndarray) -> None:
    """A photo whose landmarks sit exactly on the 256 template is its own swap crop."""
    kps = _FRONTAL * 256 / 112
    np.testing.assert_allclose(swapper.alignment(kps), np.eye(2, 3), atol=1e-9)
    np.testing.assert_allclose(
        swapper.embed_source(donor_crops[0], kps), swapper.embed_crops(donor_crops[:1])[0], rtol=1e-5, atol=1e-4
    )


def test_identity_averages_directions_at_the_sources_mean_norm(swapper: GhostSwapper) -> None:
    a = np.zeros(512, np.float32)
    a[0] = 3.0
    b = np.zeros(512, np.float32)
    b[1] = 1.0
    v = swapper.identity(np.stack([a, b]))
    np.testing.assert_allclose(np.linalg.norm(v), 2.0, rtol=1e-6)  # the mean of the norms 3 and 1
    np.testing.assert_allclose(v[:2], [np.sqrt(2.0), np.sqrt(2.0)], rtol=1e-6)  # each photo counts the same


_FRONTAL = np.array([[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]])


class _Recorder(nn.Module):
    """Generator double: returns its target unchanged (or with red forced to +1) and records its inputs."""

    def __init__(self, force_red: bool = False):
        super().__init__()
        self.force_red = force_red
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        self.seen.append((x.clone(), z.clone()))
        y = x.clone()
        if self.force_red:
            y[:, 0] = 1.0
        return y, ()


def test_swap_normalisation_round_trips_and_keeps_colour_order(donor_crops: np.ndarray) -> None:
    crops = np.concatenate([donor_crops, donor_crops[:1]])  # 3 crops, batch size 2: two batches
    identity = np.arange(512, dtype=np.float32)
    rec = _Recorder()
    s = GhostSwapper(generator=rec, arcface=None, device=CPU, dtype=torch.float32, batch_size=2)
    assert np.array_equal(s.swap(crops, identity), crops)  # [-1, 1] and back is exact after rounding
    x, z = rec.seen[0]
    assert [t.shape[0] for t, _ in rec.seen] == [2, 1]
    assert x.min() >= -1 and x.max() <= 1
    b, g, r = (torch.tensor(float(v)) / 127.5 - 1 for v in crops[0, 10, 20])
    assert torch.allclose(x[0, :, 10, 20], torch.stack([r, g, b]))  # RGB planes, GHOST's (x/255 - .5)/.5
    assert torch.equal(z, torch.from_numpy(identity).expand(2, -1))  # raw vector, same for every face

    red = GhostSwapper(generator=_Recorder(force_red=True), arcface=None, device=CPU, dtype=torch.float32)
    out = red.swap(crops[:1], identity)
    assert (out[..., 2] == 255).all() and np.array_equal(out[..., :2], crops[:1, ..., :2])  # R comes back as BGR's last


def test_swap_rejects_bad_inputs(swapper: GhostSwapper, donor_crops: np.ndarray) -> None:
    with pytest.raises(ValueError, match="identity must be 512"):
        swapper.swap(donor_crops, np.zeros(128, np.float32))
    with pytest.raises(ValueError, match="identity must be 512"):
        swapper.swap(donor_crops, np.full(512, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\(N, 256, 256, 3\)"):
        swapper.swap(donor_crops[:, :224, :224], np.zeros(512, np.float32))


def test_alignment_is_ghost_template_at_256(swapper: GhostSwapper) -> None:
    frontal = np.array([[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]])
    kps = frontal * 2.7 + np.array([311.0, 97.5])  # the frontal pose, larger and elsewhere in a photo
    m = swapper.alignment(kps)
    assert swapper.crop_size == 256 and m.shape == (2, 3)
    np.testing.assert_allclose(align.transform_points(m, kps), frontal * 256 / 112, atol=1e-6)
