"""Identity "judges": a recognition net, other than the swapper's own, that scores who a face is.

``dlib``: dlib_face_recognition_resnet_model_v1 (128-d) from face-recognition-models, fed the
68 landmarks. ``insightface``: the pack's recognition net (glintr100 in antelopev2,
w600k_r50 in buffalo_l) through faces/ort_models.py (insightface's ArcFaceONNX written out), on
the arcface-aligned crop.
Every embedding is L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import numpy as np

from builder.config import Config
from builder.errors import BuilderError, ConfigError
from builder.faces import align
from builder.faces.types import Face
from builder.registry import pick


class Judge(Protocol):
    name: str

    def embed(self, image_bgr: np.ndarray, face: Face) -> np.ndarray:
        """L2-normalised identity embedding of ``face`` in a uint8 BGR image."""
        ...


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm < 1e-12:
        raise BuilderError("identity embedding is zero or not finite; the face crop is unusable")
    return v / norm


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(normalise(a), normalise(b)))


class JudgeThresholds(NamedTuple):
    same_person: float  # cosine to the source at or above which a face counts as the source's
    still_donor: float  # cosine to the donor above which a swap "did not take"


# The judges' cosines live on different scales, so every identity threshold (the quality
# filter's and the sample scores') comes from this one table unless the config sets it.
# dlib: measured here (README, quality): other photos of the source 0.92-0.94, a real GHOST
# swap 0.96 to the source and 0.86 to its donor, unswapped donor photos 0.79-0.88 to the
# source and 0.90-0.98 to each other. insightface (ArcFace): its usual verification range,
# where other people score below 0.3.
JUDGE_THRESHOLDS: dict[str, JudgeThresholds] = {
    "insightface": JudgeThresholds(0.35, 0.70),
    "dlib": JudgeThresholds(0.90, 0.93),
}


def judge_thresholds(judge: str | None, keys: str) -> JudgeThresholds:
    """The calibrated thresholds of ``judge``; ``keys`` names the config keys that replace them."""
    if judge not in JUDGE_THRESHOLDS:
        raise ConfigError(f"no calibrated identity thresholds for the judge {judge!r}: set {keys}")
    return JUDGE_THRESHOLDS[judge]


def average_identity(vectors: Iterable[np.ndarray]) -> np.ndarray:
    """Normalise each, take the mean, renormalise: every photo counts the same."""
    stacked = [normalise(v) for v in vectors]
    if not stacked:
        raise BuilderError("no identity embeddings to average")
    return normalise(np.mean(stacked, axis=0))


def average_raw_identity(vectors: np.ndarray) -> np.ndarray:
    """average_identity rescaled to the vectors' mean norm: for nets trained on raw,
    unnormalised ArcFace vectors (GHOST's generator, SimSwap's converter)."""
    raw = np.asarray(vectors, dtype=np.float32)
    return (average_identity(raw) * float(np.linalg.norm(raw, axis=1).mean())).astype(np.float32)


def median_identity(vectors: Iterable[np.ndarray]) -> np.ndarray:
    """Per-dimension median of the normalised embeddings, renormalised.

    The donor's reference for ``donor_face = consistent``: unlike the mean, a few photos
    where the largest face is someone else do not pull it.
    """
    stacked = [normalise(v) for v in vectors]
    if not stacked:
        raise BuilderError("no identity embeddings to take the median of")
    return normalise(np.median(np.stack(stacked), axis=0))


class DlibJudge:
    name = "dlib"

    def __init__(self, cfg: Config) -> None:
        from builder.faces.detect_dlib import _dlib, model_file

        self._dlib = _dlib()
        self.model = self._dlib.face_recognition_model_v1(
            str(model_file("dlib_face_recognition_resnet_model_v1.dat"))
        )

    def embed(self, image_bgr: np.ndarray, face: Face) -> np.ndarray:
        from builder.faces.detect_dlib import predict_landmarks, to_rgb

        rgb = to_rgb(image_bgr)
        landmarks = (
            face.landmarks if face.landmarks is not None else predict_landmarks(rgb, face.box)
        )
        if landmarks.shape != (68, 2):
            raise BuilderError(f"the dlib judge needs 68 landmarks, got {landmarks.shape}")
        x1, y1, x2, y2 = (round(float(v)) for v in face.box)
        dlib = self._dlib
        shape = dlib.full_object_detection(
            dlib.rectangle(x1, y1, x2 - 1, y2 - 1),
            [dlib.point(round(float(x)), round(float(y))) for x, y in landmarks],
        )
        return normalise(np.array(self.model.compute_face_descriptor(rgb, shape)))


class InsightfaceJudge:
    name = "insightface"

    def __init__(self, cfg: Config) -> None:
        from builder.faces.detect_insightface import load_onnx_model

        self.model: Any = load_onnx_model(cfg, 1, "recognition")
        self.size = int(self.model.input_size[0])
        self.template = align.arcface_template(self.size)

    def crop(self, image_bgr: np.ndarray, face: Face) -> np.ndarray:
        """insightface's norm_crop: the arcface template at the net's input size."""
        return align.warp(image_bgr, align.estimate_similarity(face.kps, self.template), self.size)

    def embed(self, image_bgr: np.ndarray, face: Face) -> np.ndarray:
        return normalise(self.model.get_feat(self.crop(image_bgr, face))[0])


JUDGES: dict[str, Callable[[Config], Judge]] = {
    "dlib": DlibJudge,
    "insightface": InsightfaceJudge,
}


# The network each judge runs, for saying in words when both jobs fall to the same one.
NETWORKS = {
    "dlib": "dlib ResNet-29 (128-d)",
    "insightface": "InsightFace ArcFace",
}


def make_judge(cfg: Config) -> Judge:
    return pick(JUDGES, cfg.faces.judge, "faces.judge")(cfg)


def same_network(cfg: Config) -> bool:
    return cfg.faces.report_judge == cfg.faces.judge


def make_report_judge(cfg: Config, judge: Judge | None = None) -> Judge:
    """The ``faces.report_judge``; the selection ``judge`` itself where both are the same network,
    so nothing is loaded or computed twice."""
    if judge is not None and same_network(cfg):
        return judge
    return pick(JUDGES, cfg.faces.report_judge, "faces.report_judge")(cfg)


def judges_sentence(cfg: Config) -> str:
    """What a reader must know about the reported scores: who selected, who reports."""
    sel, rep = cfg.faces.judge, cfg.faces.report_judge
    if same_network(cfg):
        return (
            f"selection and report judge are the same network ({NETWORKS.get(sel, sel)}): the reported "
            "identity is what best-of maximised, not an independent check"
        )
    return f"selection judge {NETWORKS.get(sel, sel)}, report judge {NETWORKS.get(rep, rep)} (independent)"
