"""insightface backend: SCRFD from the antelopev2 / buffalo_l pack.

The ONNX file runs through ``faces/ort_models.py``, whose letterboxing, anchor decoding and
NMS are insightface's ``model_zoo`` written out (tests check they give insightface's own
output). With ``runtime.random_weights`` a random-weight ONNX model with SCRFD's real
signature stands in for the pack file and goes through the same path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from builder import weights
from builder.config import Config
from builder.errors import BuilderError, MissingWeightError
from builder.faces import ort_models, random_onnx
from builder.faces.detect import largest_first
from builder.faces.types import Face

# Official file names inside each pack: (detector, recognition).
PACK_FILES: dict[str, tuple[str, str]] = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
}


def pack_file(cfg: Config, role: int) -> Path:
    """One ONNX file of the configured insightface pack (role 0: detector, 1: recognition)."""
    pack = cfg.faces.insightface_pack
    folder = weights.require(pack, cfg.runtime.weights_dir)
    path = Path(folder) / PACK_FILES[pack][role]
    if not path.is_file():
        raise MissingWeightError(
            f"{path} is missing from the {pack} pack in {folder}; fetch the pack again"
        )
    return path


def load_onnx_model(cfg: Config, role: int, kind: str) -> ort_models.Scrfd | ort_models.ArcFace:
    """The pack file's model (role 0: detector, 1: recognition), or a random stand-in of its signature."""
    settings = (cfg.runtime.device, kind, cfg.faces.det_size, cfg.faces.det_threshold)
    if not cfg.runtime.random_weights:
        return ort_models.load(pack_file(cfg, role), *settings)
    build = random_onnx.scrfd_model if kind == ort_models.DETECTION else random_onnx.arcface_model
    # The session reads the file once, so the stand-in's folder goes when it is loaded.
    with tempfile.TemporaryDirectory(prefix="lora-builder-onnx-") as tmp:
        return ort_models.load(random_onnx.save(build(cfg.runtime.seed), Path(tmp) / f"random_{kind}.onnx"), *settings)


class InsightfaceDetector:
    name = "insightface"

    def __init__(self, cfg: Config) -> None:
        self.model = load_onnx_model(cfg, 0, ort_models.DETECTION)
        self.max_faces = cfg.faces.max_faces

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        dets, kpss = self.model.detect(image_bgr)
        if kpss is None:
            raise BuilderError(
                f"{self.model.model_file}: this SCRFD model gives no landmarks (use a *_kps model)"
            )
        faces = [
            Face(box=det[:4].astype(np.float32), score=float(det[4]), kps=kps.astype(np.float32))
            for det, kps in zip(dets, kpss, strict=True)
        ]
        return largest_first(faces)[: self.max_faces]
