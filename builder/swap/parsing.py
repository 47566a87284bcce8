"""Face parsing of FFHQ-512 crops with facexlib's BiSeNet or ParseNet, labels in BiSeNet numbering.

The networks are ``builder/models/face_parsing.py``, facexlib's written out (facexlib itself
is test-only).

Architectures and checkpoints are facexlib 0.3.0's (``facexlib/parsing/__init__.py:
init_parsing_model``): ``BiSeNet(num_class=19)`` with ``parsing_bisenet.pth`` and
``ParseNet(in_size=512, out_size=512, parsing_ch=19)`` with ``parsing_parsenet.pth``,
both raw state dicts loaded strictly. Input normalisations, both on 512 x 512 RGB / 255:
- BiSeNet: ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
  (facexlib ``inference/inference_parsing.py``; FaceFusion ``face_masker.create_region_mask``).
- ParseNet: mean 0.5, std 0.5, i.e. [-1, 1] (facexlib ``inference/inference_parsing_parsenet.py``
  and ``FaceRestoreHelper.paste_faces_to_input_image``).
Both return a tuple whose first entry is the (N, 19, 512, 512) logit map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from builder.config import Config
from builder.device import model_dtype
from builder.models.checkpoint import load_strict, randomize, read_state_dict
from builder.registry import pick
from builder.weights import require

PARSE_SIZE = 512

# CelebAMask-HQ classes in BiSeNet's order (facexlib inference_parsing.py; face-parsing.PyTorch).
BISENET_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
# The same classes in ParseNet's order (facexlib inference_parsing_parsenet.py).
PARSENET_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
# PARSENET_TO_BISENET[parsenet_label] == bisenet_label of the same class.
PARSENET_TO_BISENET = np.array([BISENET_LABELS.index(name) for name in PARSENET_LABELS], dtype=np.uint8)

MOUTH_LABELS = (11, 12, 13)  # mouth (teeth and the inside), upper lip, lower lip
# The region the swap replaces, as FaceFusion's face_mask_region_set lists it. Ears, hair,
# hat, neck and cloth stay the donor's: they are the head shape and look the character
# inherits, GHOST's 256 crop barely reaches them (its output there is a smeared copy of
# the donor), and pasting them would carry the crop's edge into the hair line and collar.
FACE_LABELS = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)  # skin, brows, eyes, eye_g, nose, mouth, lips

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ParserSpec:
    weight_name: str  # registry name of the official checkpoint
    build: Callable[[], nn.Module]
    mean: tuple[float, float, float]  # RGB, applied to x / 255
    std: tuple[float, float, float]
    to_bisenet: np.ndarray | None  # label lookup into BiSeNet numbering; None: already BiSeNet


def _bisenet() -> nn.Module:
    from builder.models.face_parsing import BiSeNet

    return BiSeNet(num_class=19)


def _parsenet() -> nn.Module:
    from builder.models.face_parsing import ParseNet

    return ParseNet(in_size=PARSE_SIZE, out_size=PARSE_SIZE, parsing_ch=19)


PARSERS: dict[str, ParserSpec] = {
    "bisenet": ParserSpec("parsing_bisenet", _bisenet, _IMAGENET_MEAN, _IMAGENET_STD, None),
    "parsenet": ParserSpec("parsing_parsenet", _parsenet, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), PARSENET_TO_BISENET),
}


class TorchFaceParser:
    def __init__(self, net: nn.Module, spec: ParserSpec, device: torch.device, dtype: torch.dtype, batch_size: int = 8):
        self.net = net
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._mean = torch.tensor(spec.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=device, dtype=dtype).view(1, 3, 1, 1)

    def parse(self, crops: np.ndarray) -> np.ndarray:
        if crops.ndim != 4 or crops.shape[1:] != (PARSE_SIZE, PARSE_SIZE, 3) or crops.dtype != np.uint8:
            raise ValueError(f"parser input must be uint8 (N, 512, 512, 3) BGR, got {crops.dtype} {crops.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(crops[i : i + self.batch_size, ..., ::-1])).to(self.device)
                x = (x.permute(0, 3, 1, 2).to(self.dtype) / 255.0 - self._mean) / self._std
                logits = self.net(x)
                out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
        labels = np.concatenate(out)
        return labels if self.spec.to_bisenet is None else self.spec.to_bisenet[labels]


def load_parser(cfg: Config, device: torch.device) -> TorchFaceParser:
    """The configured face parser ([swap] parser), its official weights loaded once."""
    spec = pick(PARSERS, cfg.swap.parser, "swap.parser")
    net = spec.build()
    if cfg.runtime.random_weights:
        randomize(net, cfg.runtime.seed)
    else:
        path = require(spec.weight_name, cfg.runtime.weights_dir)
        load_strict(net, read_state_dict(path), path)
    dtype = model_dtype(device)
    return TorchFaceParser(net.eval().to(device, dtype), spec, device, dtype, cfg.swap.batch_size)
