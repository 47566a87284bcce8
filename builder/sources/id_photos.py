"""What PhotoMaker V2 is conditioned on: each source photo and its raw buffalo_l ArcFace embedding.

Upstream (photomaker/insightface_package.py) runs insightface's FaceAnalysis with the
default pack, buffalo_l (SCRFD det_10g + w600k_r50), at det_size 640, retrying at smaller
sizes (640 down to 256 in steps of 64) when nothing is found, and takes the raw, not
normalised, 512-d embedding. The same files go through the same insightface code here.
With ``faces.detector = dlib`` the box and five points come from dlib instead (no
download); the embedding is always buffalo_l's.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder.config import Config
from builder.errors import BuilderError, ImageError
from builder.faces.types import Face
from builder.io import load_image

PACK = "buffalo_l"
DET_SIZES = (640, 576, 512, 448, 384, 320, 256)  # analyze_faces' retries


@dataclass
class IdPhotos:
    images_rgb: list[np.ndarray] = field(default_factory=list)  # the CLIP image encoder's input
    embeds: list[np.ndarray] = field(default_factory=list)  # (512,) raw ArcFace each
    used: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    digest: str = ""  # sha256 over the used files' bytes: part of every generated image's key


def buffalo_config(cfg: Config) -> Config:
    out = copy.deepcopy(cfg)
    out.faces.insightface_pack = PACK
    return out


class _Retrying:
    """buffalo_l's SCRFD, tried at each of DET_SIZES until it finds a face."""

    def __init__(self, cfg: Config) -> None:
        from builder.faces.detect_insightface import InsightfaceDetector

        self.detector = InsightfaceDetector(cfg)

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        for size in DET_SIZES:
            self.detector.model.input_size = (size, size)
            faces = self.detector.detect(image_bgr)
            if faces:
                return faces
        return []


def id_photos(paths: list[Path], cfg: Config) -> IdPhotos:
    """Every source photo with a face, its RGB pixels and raw buffalo_l embedding."""
    from builder.faces.detect import make_detector
    from builder.faces.identity import InsightfaceJudge

    bcfg = buffalo_config(cfg)
    detector = _Retrying(bcfg) if cfg.faces.detector == "insightface" else make_detector(cfg)
    arcface = InsightfaceJudge(bcfg)
    out = IdPhotos()
    digest = hashlib.sha256()
    for path in paths:
        try:
            image = load_image(path, cfg.runtime.max_pixels)
        except ImageError as exc:
            out.failed.append((str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        faces = detector.detect(image)
        if not faces:
            out.failed.append((str(path), "no face found"))
            continue
        # Sources are portraits of one person: the largest face is theirs (upstream takes the
        # detector's first, its most confident, which is the same face in a portrait).
        crop = arcface.crop(image, faces[0])
        out.embeds.append(np.asarray(arcface.model.get_feat(crop)[0], dtype=np.float32))
        out.images_rgb.append(np.ascontiguousarray(image[:, :, ::-1]))
        out.used.append(str(path))
        digest.update(Path(path).read_bytes())
    if not out.used:
        details = "; ".join(f"{p}: {r}" for p, r in out.failed) or "no source photos given"
        raise BuilderError(f"no usable source face for PhotoMaker ({details})")
    out.digest = digest.hexdigest()
    return out
