"""insightface backend: SCRFD from the antelopev2 / buffalo_l pack, decoded by insightface itself.

The ONNX file is loaded through ``insightface.model_zoo.get_model``, so anchor generation,
box and keypoint decoding, letterboxing and NMS are insightface's own code, exactly what
GHOST and FaceFusion run. With ``runtime.random_weights`` a random-weight ONNX model with
SCRFD's real signature stands in for the pack file and goes through the same path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from builder import weights
from builder.config import Config
from builder.device import resolve_device
from builder.errors import BuilderError, MissingWeightError
from builder.faces import random_onnx
from builder.faces.detect import largest_first
from builder.faces.types import Face

# Official file names inside each pack: (detector, recognition).
PACK_FILES: dict[str, tuple[str, str]] = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
}


def providers_for(device_name: str) -> tuple[list[str], int]:
    """onnxruntime providers and insightface's ctx_id (-1 pins the CPU provider)."""
    if resolve_device(device_name).type == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], 0
    return ["CPUExecutionProvider"], -1


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


def load_onnx_model(cfg: Config, role: int, kind: str) -> Any:
    """An insightface model object for the pack file, or for a random stand-in."""
    import insightface

    holder = None
    if cfg.runtime.random_weights:
        holder = tempfile.TemporaryDirectory(prefix="lora-builder-onnx-")
        build = random_onnx.scrfd_model if kind == "detection" else random_onnx.arcface_model
        path = random_onnx.save(build(cfg.runtime.seed), Path(holder.name) / f"random_{kind}.onnx")
    else:
        path = pack_file(cfg, role)
    providers, ctx_id = providers_for(cfg.runtime.device)
    try:
        model = insightface.model_zoo.get_model(str(path), providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        raise BuilderError(f"{path}: cannot load as an ONNX model ({exc})") from exc
    if model is None or getattr(model, "taskname", None) != kind:
        raise BuilderError(f"{path}: insightface does not recognise it as a {kind} model")
    model.prepare(ctx_id)
    # insightface reopens the file for each new input size, so a stand-in's temporary
    # folder lives exactly as long as the model object.
    model.lora_builder_tempdir = holder
    return model


class InsightfaceDetector:
    name = "insightface"

    def __init__(self, cfg: Config) -> None:
        self.model = load_onnx_model(cfg, 0, "detection")
        size = cfg.faces.det_size
        self.model.prepare(
            providers_for(cfg.runtime.device)[1],
            input_size=(size, size),
            det_thresh=cfg.faces.det_threshold,
        )
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
