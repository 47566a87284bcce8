"""WD14 tags from SmilingWolf's v3 taggers (ONNX through onnxruntime), as kohya tags them.

``caption.wd14_model`` is a registry name (wd14_swinv2, the default; wd14_eva02_large;
wd14_vit), a Hugging Face repo id, or a folder holding ``model.onnx`` and
``selected_tags.csv`` (``tag_id,name,category,count``; category 9 rating, 0 general,
4 character). The preprocessing is kohya's ``finetune/tag_images_by_wd14_tagger.py``
(``preprocess_image``): the image, alpha already composited on white and in BGR order by
``builder.io.load_image``, is padded to a centred square with white, resized to the
model's input size (INTER_AREA when shrinking, else PIL's LANCZOS), and fed as float32
0-255 NHWC without normalisation. The output is one sigmoid probability per CSV row.

As kohya does, a general tag is kept when its probability is at least
``wd14_general_threshold`` and a character tag at least ``wd14_character_threshold``;
rating tags are dropped (kohya adds them only with --use_rating_tags). Underscores become
spaces in tags longer than three characters (kohya's --remove_underscore), which keeps
kaomoji such as ``^_^``. Tags come most confident first (general, then character), so
the caption's token budget drops the least confident ones first.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from builder import ort, weights
from builder.caption.hub import from_pretrained
from builder.config import Config
from builder.console import console, random_weights_banner
from builder.errors import BuilderError, CheckpointError, ConfigError, MissingWeightError

WD14_MODELS = {
    "wd14_swinv2": "SmilingWolf/wd-swinv2-tagger-v3",
    "wd14_eva02_large": "SmilingWolf/wd-eva02-large-tagger-v3",
    "wd14_vit": "SmilingWolf/wd-vit-tagger-v3",
}
MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
CSV_HEADER = ("tag_id", "name", "category", "count")
RATING, GENERAL, CHARACTER = 9, 0, 4
IMAGE_SIZE = 448  # kohya's IMAGE_SIZE; the model's own input shape wins when it is fixed
N_RATINGS = 4  # general, sensitive, questionable, explicit: the first rows of every v3 CSV


@dataclass(frozen=True)
class TagList:
    names: tuple[str, ...]
    categories: tuple[int, ...]


@dataclass(frozen=True)
class TagSettings:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    remove_underscore: bool = True

    def __post_init__(self) -> None:
        for key, value in (("general", self.general_threshold), ("character", self.character_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"caption.wd14_{key}_threshold = {value}: must be in [0, 1]")

    @classmethod
    def from_config(cls, cfg: Config) -> TagSettings:
        c = cfg.caption
        return cls(c.wd14_general_threshold, c.wd14_character_threshold, c.wd14_remove_underscore)


def read_tags(path: Path) -> TagList:
    """The labels of ``selected_tags.csv``, in output order; a clear error for anything else."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the tag list ({exc})") from None
    if not rows or tuple(rows[0][:3]) != CSV_HEADER[:3]:
        raise CheckpointError(f"{path}: not a WD14 selected_tags.csv (header {rows[0] if rows else 'missing'}, "
                              f"expected {','.join(CSV_HEADER)})")
    names, categories = [], []
    for line, row in enumerate(rows[1:], start=2):
        try:
            names.append(row[1])
            categories.append(int(row[2]))
        except (IndexError, ValueError):
            raise CheckpointError(f"{path}, line {line}: expected tag_id,name,category,count, got {row}") from None
    return TagList(tuple(names), tuple(categories))


def kohya_tag_name(name: str, remove_underscore: bool) -> str:
    """kohya's remove_underscore: spaces for underscores, except in tags of three characters or fewer."""
    return name.replace("_", " ") if remove_underscore and len(name) > 3 else name


def preprocess(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """kohya's preprocess_image for a uint8 BGR image: white-padded square, resized, float32 (size, size, 3)."""
    h, w = image.shape[:2]
    side = max(h, w)
    pad_x, pad_y = side - w, side - h
    pad_l, pad_t = pad_x // 2, pad_y // 2
    square = np.pad(image, ((pad_t, pad_y - pad_t), (pad_l, pad_x - pad_l), (0, 0)), constant_values=255)
    if side >= size:
        resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    else:  # kohya upscales with PIL's LANCZOS, on RGB
        rgb = Image.fromarray(np.ascontiguousarray(square[:, :, ::-1]))
        resized = np.asarray(rgb.resize((size, size), resample=Image.Resampling.LANCZOS))[:, :, ::-1]
    return resized.astype(np.float32)


class WD14Tagger:
    name = "wd14"

    def __init__(self, session, labels: TagList, settings: TagSettings, source: str) -> None:
        self.session = session
        self.settings = settings
        self.source = source
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        # The space reads the size from the graph; kohya assumes 448. A dynamic size falls back to 448.
        self.size = inp.shape[1] if isinstance(inp.shape[1], int) else IMAGE_SIZE
        self.labels = labels
        self.names = [kohya_tag_name(n, settings.remove_underscore) for n in labels.names]
        self.categories = np.asarray(labels.categories)

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, n_tags) float32: the model's sigmoid outputs, one row per image."""
        batch = np.stack([preprocess(im, self.size) for im in images])
        probs = self.session.run(None, {self.input_name: batch})[0]
        if probs.ndim != 2 or probs.shape[1] != len(self.names):
            raise CheckpointError(
                f"{self.source}: the model gives {probs.shape[1:]} scores per image but {TAGS_FILE} "
                f"lists {len(self.names)} tags; the two files are not from the same tagger"
            )
        return probs

    def select(self, probs: np.ndarray) -> list[str]:
        """The kept tags of one image, most confident first: general, then character."""
        s = self.settings
        out: list[str] = []
        for category, threshold in ((GENERAL, s.general_threshold), (CHARACTER, s.character_threshold)):
            hits = np.flatnonzero((self.categories == category) & (probs >= threshold))
            out += [self.names[i] for i in hits[np.argsort(-probs[hits], kind="stable")]]
        return out

    def tag(self, images: list[np.ndarray]) -> list[list[str]]:
        if not images:
            return []
        return [self.select(p) for p in self.probabilities(images)]


def tagger_folder(model: str, weights_dir: str = "") -> Path:
    """The folder holding the tagger's model.onnx and selected_tags.csv for caption.wd14_model."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        name = next((n for n, repo in WD14_MODELS.items() if model in (n, repo)), None)
        if name is not None:
            folder = weights.require(name, weights_dir)
        elif "/" in model:
            from huggingface_hub import snapshot_download

            folder = from_pretrained(
                lambda repo, **kw: Path(snapshot_download(repo, allow_patterns=[MODEL_FILE, TAGS_FILE], **kw)),
                model, what="WD14 tagger", fetch_hint=f"`huggingface-cli download {model} {MODEL_FILE} {TAGS_FILE}`",
            )
        else:
            raise ConfigError(
                f"caption.wd14_model = {model!r} is not one of {', '.join(WD14_MODELS)}, a repo id or a folder"
            )
    missing = [f for f in (MODEL_FILE, TAGS_FILE) if not (folder / f).is_file()]
    if missing:
        raise MissingWeightError(f"{folder}: the WD14 tagger needs {' and '.join(missing)} there")
    return folder


def random_tagger_onnx(n_tags: int, seed: int, size: int = IMAGE_SIZE, bias: np.ndarray | None = None):
    """A small ONNX graph with the taggers' I/O: float32 (N, size, size, 3) BGR 0-255 in, (N, n_tags) sigmoid out.

    A strided convolution, global pooling and one dense layer with seeded random weights;
    ``bias`` (logits) sets each tag's base score. The input and output names of the real
    v3 files are read from the session, never assumed, so they are not copied here.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    channels, patch = 8, max(size // 14, 1)
    conv = rng.normal(0, 1 / (3 * patch * 255), (channels, 3, patch, patch)).astype(np.float32)
    dense = rng.normal(0, 2.0, (channels, n_tags)).astype(np.float32)
    logits = rng.normal(-2.0, 1.5, n_tags).astype(np.float32) if bias is None else np.asarray(bias, np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((conv, "conv_w"), (dense, "dense_w"), (logits, "dense_b"))]
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w"], ["feat"], strides=[patch, patch]),
        helper.make_node("Relu", ["feat"], ["act"]),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense_w"], ["mm"]),
        helper.make_node("Add", ["mm", "dense_b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "wd14_random",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_tags])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def placeholder_tags(n_general: int = 48, n_character: int = 12) -> TagList:
    """Under --random-weights without the real CSV: the four v3 ratings, then numbered tags."""
    names = ("general", "sensitive", "questionable", "explicit",
             *(f"tag_{i:04d}" for i in range(n_general)), *(f"character_{i:04d}" for i in range(n_character)))
    return TagList(names, (RATING,) * N_RATINGS + (GENERAL,) * n_general + (CHARACTER,) * n_character)


def load_wd14(cfg: Config, device: torch.device) -> WD14Tagger:
    """The WD14 tagger for cfg.caption.wd14_model; a random-weight graph under --random-weights."""
    settings = TagSettings.from_config(cfg)
    model = cfg.caption.wd14_model
    if cfg.runtime.random_weights:
        random_weights_banner()
        try:  # the real tag list if it is here (never downloaded for a random-weight run)
            local = Path(model).expanduser().is_dir() or model in WD14_MODELS or model in WD14_MODELS.values()
            labels = read_tags(tagger_folder(model, cfg.runtime.weights_dir) / TAGS_FILE) if local else placeholder_tags()
        except MissingWeightError:
            labels = placeholder_tags()
        graph = random_tagger_onnx(len(labels.names), cfg.runtime.seed)
        session, source = ort.session(graph.SerializeToString(), device), model
    else:
        folder = tagger_folder(model, cfg.runtime.weights_dir)
        labels = read_tags(folder / TAGS_FILE)
        try:
            session = ort.session(folder / MODEL_FILE, device)
        except BuilderError as exc:
            raise CheckpointError(str(exc)) from None
        source = str(folder)
    if labels.categories[:N_RATINGS] != (RATING,) * N_RATINGS:
        raise CheckpointError(f"{source}: {TAGS_FILE} does not start with the four rating tags of a v3 tagger")
    kind = "random weights" if cfg.runtime.random_weights else "ONNX"
    console.print(f"tagger: WD14 ({kind}, {source}, {len(labels.names)} tags) on {ort.provider_of(session)}")
    return WD14Tagger(session, labels, settings, source)

