"""Face parsing: facexlib's checkpoints load strictly into our nets, inputs are normalised per model, labels are BiSeNet's."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from builder.config import Config
from builder.errors import CheckpointError
from builder.swap.parsing import (
    BISENET_LABELS,
    FACE_LABELS,
    MOUTH_LABELS,
    PARSENET_LABELS,
    PARSENET_TO_BISENET,
    PARSERS,
    TorchFaceParser,
    load_parser,
)
from tests.fixtures.ghost import write_parsing_checkpoint

torch.set_num_threads(2)
CPU = torch.device("cpu")


def _cfg(weights_dir: Path, parser: str) -> Config:
    cfg = Config()
    cfg.runtime = dataclasses.replace(cfg.runtime, weights_dir=str(weights_dir))
    cfg.swap = dataclasses.replace(cfg.swap, parser=parser, batch_size=1)
    return cfg


@pytest.fixture(scope="session")
def face_crop(source_photo: Path) -> np.ndarray:
    return cv2.resize(cv2.imread(str(source_photo)), (512, 512), interpolation=cv2.INTER_AREA)[None]


@pytest.mark.parametrize("kind", ["bisenet", "parsenet"])
def test_official_checkpoint_loads_and_parses_to_bisenet_labels(tmp_path: Path, face_crop: np.ndarray, kind: str) -> None:
    path = write_parsing_checkpoint(tmp_path, kind=kind, seed=3)
    assert path.name == f"parsing_{kind}.pth"
    parser = load_parser(_cfg(tmp_path, kind), CPU)
    labels = parser.parse(face_crop)
    assert labels.shape == (1, 512, 512) and labels.dtype == np.uint8
    assert labels.max() <= 18
    assert len(np.unique(labels)) > 1  # a real forward pass, not a constant
    if kind == "parsenet":  # only BiSeNet numbers can come out, so no ParseNet-only value leaks through
        assert set(np.unique(labels)) <= set(PARSENET_TO_BISENET.tolist())


@pytest.mark.parametrize("kind", ["bisenet", "parsenet"])
def test_missing_or_misshapen_key_names_key_and_file(tmp_path: Path, kind: str) -> None:
    path = write_parsing_checkpoint(tmp_path, kind=kind, seed=0)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    victim = next(k for k in sd if k.endswith("weight") and sd[k].ndim == 4)
    key = re.escape(victim)
    torch.save({k: v for k, v in sd.items() if k != victim}, path)
    with pytest.raises(CheckpointError, match=rf"parsing_{kind}\.pth.*missing keys: {key}"):
        load_parser(_cfg(tmp_path, kind), CPU)
    torch.save(dict(sd, **{victim: sd[victim][:, :1]}), path)
    with pytest.raises(CheckpointError, match=rf"parsing_{kind}\.pth.*misshapen keys: {key} \(file"):
        load_parser(_cfg(tmp_path, kind), CPU)


def test_parsenet_to_bisenet_is_the_name_preserving_permutation() -> None:
    assert len(BISENET_LABELS) == len(PARSENET_LABELS) == 19
    assert sorted(PARSENET_TO_BISENET.tolist()) == list(range(19))  # a bijection
    for p, b in enumerate(PARSENET_TO_BISENET):
        assert PARSENET_LABELS[p] == BISENET_LABELS[b]
    # The classes the brief calls out (facexlib's two inference scripts list both orders).
    assert PARSENET_TO_BISENET[[0, 1, 2, 3, 10, 11, 12, 13, 14, 17, 18]].tolist() == [0, 1, 10, 6, 11, 12, 13, 17, 18, 14, 16]
    assert [BISENET_LABELS[i] for i in MOUTH_LABELS] == ["mouth", "u_lip", "l_lip"]
    face = {BISENET_LABELS[i] for i in FACE_LABELS}
    assert face == {"skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "nose", "mouth", "u_lip", "l_lip"}


class _LogitStub(nn.Module):
    """Stands in for a parsing net: records its input, returns one-hot logits of a fixed label map."""

    def __init__(self, labels: np.ndarray):
        super().__init__()
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        logits = torch.nn.functional.one_hot(self.labels, 19).permute(2, 0, 1).float() * 5.0 - 1.0
        return logits[None].expand(len(x), -1, -1, -1)


def test_label_map_applied_to_constructed_logits_and_inputs_normalised_per_model() -> None:
    labels = (np.arange(512)[:, None] // 27 + np.arange(512)[None, :] // 27) % 19  # every label, in bands
    crop = np.zeros((3, 512, 512, 3), np.uint8)  # 3 crops through batches of 2
    crop[..., 2] = 255  # red 255, green 51, blue 0 (BGR order)
    crop[..., 1] = 51

    for kind in ("bisenet", "parsenet"):
        stub = _LogitStub(labels)
        out = TorchFaceParser(stub, PARSERS[kind], CPU, torch.float32, batch_size=2).parse(crop)
        expected = labels if kind == "bisenet" else PARSENET_TO_BISENET[labels]
        assert out.shape == (3, 512, 512) and [len(x) for x in stub.seen] == [2, 1]
        assert all(np.array_equal(o, expected) for o in out)
        r, g, b = stub.seen[0][0, :, 0, 0].tolist()
        if kind == "bisenet":  # ImageNet mean/std on RGB / 255
            assert (r, g, b) == pytest.approx(((1 - 0.485) / 0.229, (0.2 - 0.456) / 0.224, (0 - 0.406) / 0.225), abs=1e-5)
        else:  # [-1, 1]
            assert (r, g, b) == pytest.approx((1.0, -0.6, -1.0), abs=1e-6)
    # A ParseNet hair pixel (13) reads as BiSeNet hair (17), never as BiSeNet l_lip (13).
    hair = labels == PARSENET_LABELS.index("hair")
    assert (TorchFaceParser(_LogitStub(labels), PARSERS["parsenet"], CPU, torch.float32).parse(crop)[0][hair] == 17).all()


def test_parser_rejects_wrong_crop_size() -> None:
    parser = TorchFaceParser(_LogitStub(np.zeros((512, 512), np.uint8)), PARSERS["bisenet"], CPU, torch.float32)
    with pytest.raises(ValueError, match=r"\(N, 512, 512, 3\)"):
        parser.parse(np.zeros((1, 256, 256, 3), np.uint8))
