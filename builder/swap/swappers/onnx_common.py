"""What the ONNX swappers (inswapper, hyperswap, simswap) share.

- a session on ``builder.ort``'s providers (CUDA first on a GPU device, else the CPU);
- the check that a graph has the inputs and output its loader feeds and reads, so a wrong
  file is refused at load with its path and what is wrong, not deep inside onnxruntime;
- the recognizer these swappers were trained with: insightface's ArcFace w600k_r50 from the
  buffalo_l pack, on FaceFusion's ``arcface_112_v2`` crop (insightface's own 112 template)
  through ``faces/ort_models.py``'s ArcFace, insightface's ArcFaceONNX written out
  (x / 127.5 - 1, BGR -> RGB), returning the raw embedding;
- the crop tensors: BGR uint8 -> RGB float32 NCHW ``(x / 255 - mean) / std`` and back, with
  the output clipped to [0, 1] first, as FaceFusion's prepare/normalize_crop_frame do;
- ``OnnxSwapper``, the Swapper every one of them is; each module adds its identity rule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import onnx
import torch

from builder import ort, weights
from builder.config import Config
from builder.errors import BuilderError, ConfigError
from builder.faces import align
from builder.faces.detect_insightface import load_onnx_model
from builder.faces.random_onnx import save

FLOAT = "tensor(float)"
EMBEDDING_SIZE = 512
RECOGNIZER_PACK = "buffalo_l"  # its w600k_r50 is the ArcFace inswapper, HyperSwap and CrossFace take
RECOGNIZER_TEMPLATE = "arcface_112_v2"
RECOGNIZER_SIZE = 112

Shape = tuple[int | None, ...]  # None: any size


@dataclass(frozen=True)
class Port:
    """A graph input the loader feeds by name, with the shape it feeds."""

    name: str
    shape: Shape


def _fits(actual: Sequence[Any], expected: Shape) -> bool:
    # A symbolic dimension (a name or None in the graph) takes whatever size is fed.
    return len(actual) == len(expected) and all(
        e is None or not isinstance(a, int) or a == e for a, e in zip(actual, expected, strict=True)
    )


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"


def check_signature(path: Path, what: str, session: Any, inputs: Sequence[Port], output: Shape) -> None:
    """Refuse a graph whose inputs are not exactly ``inputs`` or whose first output is not ``output``."""
    got = {i.name: i for i in session.get_inputs()}
    if set(got) != {p.name for p in inputs}:
        raise BuilderError(
            f"{path}: not the {what} graph: its inputs are {', '.join(sorted(got)) or 'none'}, "
            f"expected {', '.join(sorted(p.name for p in inputs))}"
        )
    for port in inputs:
        arg = got[port.name]
        if arg.type != FLOAT:
            raise BuilderError(f"{path}: not the {what} graph: input '{port.name}' is {arg.type}, expected {FLOAT}")
        if not _fits(arg.shape, port.shape):
            raise BuilderError(
                f"{path}: not the {what} graph: input '{port.name}' has shape {_shape_text(arg.shape)}, "
                f"expected {_shape_text(port.shape)}"
            )
    first = session.get_outputs()[0]
    if first.type != FLOAT or not _fits(first.shape, output):
        raise BuilderError(
            f"{path}: not the {what} graph: its first output '{first.name}' is {first.type} "
            f"{_shape_text(first.shape)}, expected {FLOAT} {_shape_text(output)}"
        )


def open_session(path: Path, device: torch.device, what: str, inputs: Sequence[Port], output: Shape) -> Any:
    """An onnxruntime session on ``path`` whose signature has been checked."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Errors only: inswapper's emap is an initializer no node reads, which onnxruntime
    # would otherwise warn about on every load.
    options.log_severity_level = 3
    session = ort.session(path, device, options)
    check_signature(path, what, session, inputs, output)
    return session


def read_model(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BuilderError(f"{path}: cannot read as an ONNX model ({exc})") from exc


@contextlib.contextmanager
def model_files(cfg: Config, stand_ins: dict[str, Callable[[int], onnx.ModelProto]]) -> Iterator[dict[str, Path]]:
    """The registry files of these names; with ``runtime.random_weights``, random graphs of their
    real signatures, which exist while the block runs (sessions read the file once)."""
    if not cfg.runtime.random_weights:
        yield {name: weights.require(name, cfg.runtime.weights_dir) for name in stand_ins}
        return
    with tempfile.TemporaryDirectory(prefix="lora-builder-onnx-") as tmp:
        yield {name: save(build(cfg.runtime.seed), Path(tmp) / f"{name}.onnx") for name, build in stand_ins.items()}


def no_options(name: str, options: dict[str, str]) -> None:
    if options:
        raise ConfigError(f"the {name} swapper takes no options, got {', '.join(options)}")


def check_raw(raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 2 or raw.shape[1] != EMBEDDING_SIZE or not len(raw) or not np.isfinite(raw).all():
        raise ValueError(f"raw embeddings must be finite (N >= 1, {EMBEDDING_SIZE}), got shape {raw.shape}")
    return raw


class Recognizer:
    """ArcFace w600k_r50 of the buffalo_l pack, whatever faces.insightface_pack the detector uses."""

    def __init__(self, cfg: Config) -> None:
        pack_cfg = dataclasses.replace(cfg, faces=dataclasses.replace(cfg.faces, insightface_pack=RECOGNIZER_PACK))
        self.model = load_onnx_model(pack_cfg, 1, "recognition")
        if tuple(self.model.input_size) != (RECOGNIZER_SIZE, RECOGNIZER_SIZE):
            raise BuilderError(
                f"{self.model.model_file}: the swappers' ArcFace takes {RECOGNIZER_SIZE} px crops, "
                f"this one {self.model.input_size}"
            )

    def embed(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        m = align.facefusion_alignment(kps, RECOGNIZER_TEMPLATE, RECOGNIZER_SIZE)
        raw = np.asarray(self.model.get_feat(align.warp(image, m, RECOGNIZER_SIZE)), dtype=np.float32).reshape(-1)
        if raw.shape != (EMBEDDING_SIZE,):
            raise BuilderError(f"{self.model.model_file}: gives {raw.size} numbers, not a {EMBEDDING_SIZE}-d embedding")
        return raw


_RECOGNIZERS: weakref.WeakValueDictionary[tuple[str, bool, int, str], Recognizer] = weakref.WeakValueDictionary()


def shared_recognizer(cfg: Config) -> Recognizer:
    """One recognizer for all the swappers loaded together (``swap.swapper = "best"`` loads
    several), freed with the last of them."""
    key = (str(weights.cache_dir(cfg.runtime.weights_dir)), cfg.runtime.random_weights, cfg.runtime.seed,
           cfg.runtime.device)  # fmt: skip
    recognizer = _RECOGNIZERS.get(key)
    if recognizer is None:
        recognizer = _RECOGNIZERS[key] = Recognizer(cfg)
    return recognizer


def to_blob(crops: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 BGR (N, S, S, 3) -> float32 RGB (N, 3, S, S), (x / 255 - mean) / std."""
    x = crops[..., ::-1].astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def from_blob(y: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """float RGB (N, 3, S, S) -> uint8 BGR (N, S, S, 3); de-normalised first where the model's
    output lives in its input's normalised range. Rounded where upstream truncates, which
    removes a -0.5 level bias."""
    y = np.asarray(y, dtype=np.float32).transpose(0, 2, 3, 1)
    if mean is not None and std is not None:
        y = y * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    y = np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(y[..., ::-1])


@dataclass
class OnnxSwapper:
    """A FaceFusion-style ONNX swapper: inputs ``target`` (crop) and ``source`` (identity)."""

    name: str
    crop_size: int
    template: str  # a builder.faces.align.FACEFUSION_TEMPLATES name
    session: Any
    path: Path
    recognizer: Recognizer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    denormalise: bool  # the output is in the input's normalised range (hyperswap), not [0, 1]
    batch_size: int

    @classmethod
    def on(cls, cfg: Config, session: Any, path: Path, **fields: Any) -> Self:
        """``cls`` on an open swap graph, with the recognizer the swappers loaded together share
        and the graph's own batch: what every ONNX swapper's ``load`` fills in the same way."""
        return cls(
            session=session, path=path, recognizer=shared_recognizer(cfg), batch_size=batch_size(session, cfg), **fields
        )

    def alignment(self, kps: np.ndarray) -> np.ndarray:
        return align.facefusion_alignment(kps, self.template, self.crop_size)

    def embed_source(self, image: np.ndarray, kps: np.ndarray) -> np.ndarray:
        return self.recognizer.embed(image, kps)

    def identity(self, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # each model's own rule

    def swap(self, crops: np.ndarray, identity: np.ndarray) -> np.ndarray:
        size = self.crop_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
            raise ValueError(f"donor crops must be uint8 (N, {size}, {size}, 3) BGR, got {crops.dtype} {crops.shape}")
        source = np.asarray(identity, dtype=np.float32).reshape(-1)
        if source.shape != (EMBEDDING_SIZE,) or not np.isfinite(source).all():
            raise ValueError(f"identity must be {EMBEDDING_SIZE} finite numbers, got shape {source.shape}")
        x = to_blob(crops, self.mean, self.std)
        output = self.session.get_outputs()[0].name
        out = []
        for i in range(0, len(x), self.batch_size):
            chunk = x[i : i + self.batch_size]
            y = self.session.run([output], {"target": chunk, "source": np.tile(source, (len(chunk), 1))})[0]
            if y.shape != chunk.shape:
                raise BuilderError(f"{self.path}: gave {y.shape} for {chunk.shape} crops")
            out.append(y)
        return from_blob(np.concatenate(out), *((self.mean, self.std) if self.denormalise else (None, None)))


def swapper_inputs(crop_size: int) -> tuple[Port, Port]:
    """The swap graphs' inputs as FaceFusion feeds them (forward_swap_face), one face at a time."""
    return Port("target", (1, 3, crop_size, crop_size)), Port("source", (1, EMBEDDING_SIZE))


def open_swapper(path: Path, device: torch.device, what: str, crop_size: int) -> Any:
    """A session on a swap graph, checked for the crop-in, crop-out signature of ``swapper_inputs``."""
    return open_session(path, device, what, swapper_inputs(crop_size), (1, 3, crop_size, crop_size))


def batch_size(session: Any, cfg: Config) -> int:
    """The graph's fixed batch (1 in the published files), else swap.batch_size."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else cfg.swap.batch_size
