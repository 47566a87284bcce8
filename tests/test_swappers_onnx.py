"""The ONNX swappers (inswapper_128, hyperswap_1a/1b/1c_256, simswap_256) on random-weight graphs with
the real input/output names, shapes and dtypes, loaded from the cache under the official file names
and run through the real code; inswapper against insightface's own INSwapper."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.inswapper import INSwapper
from onnx import numpy_helper

from builder import weights
from builder.errors import BuilderError, ConfigError, MissingWeightError
from builder.faces import align
from builder.faces.identity import normalise
from builder.faces.random_onnx import save
from builder.io import load_image
from builder.swap.swappers import hyperswap, inswapper, random_onnx, simswap
from builder.swap.swappers.onnx_common import EMBEDDING_SIZE
from tests.fixtures.faces import faces_config, write_fake_pack

CPU = torch.device("cpu")
GRAPHS = {
    "inswapper_128": random_onnx.inswapper_model,
    "hyperswap_1a_256": random_onnx.hyperswap_model,
    "hyperswap_1b_256": random_onnx.hyperswap_model,
    "hyperswap_1c_256": random_onnx.hyperswap_model,
    "simswap_256": random_onnx.simswap_model,
    "crossface_simswap": random_onnx.converter_model,
}
MODULES = {inswapper: "inswapper_128", hyperswap: "hyperswap_1a_256", simswap: "simswap_256"}


def _install(weights_dir: Path, name: str, model: onnx.ModelProto) -> Path:
    return save(model, weights.weight_path(name, str(weights_dir)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights cache holding every swapper graph and the buffalo_l pack under the official names."""
    root = tmp_path_factory.mktemp("swapper-weights")
    for seed, (name, build) in enumerate(GRAPHS.items()):
        _install(root, name, build(seed))
    write_fake_pack(root, "buffalo_l")
    return root


def _cfg(weights_dir: Path):
    cfg = faces_config()
    cfg.runtime.weights_dir = str(weights_dir)
    return cfg


@pytest.fixture(scope="module")
def photo(source_photo: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real photo and 5 landmarks at a size every crop samples without a prefilter (scale > 0.5)."""
    image = load_image(source_photo)
    image = cv2.resize(image, (480, round(480 * image.shape[0] / image.shape[1])), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    kps = align.ARCFACE_112 / 112.0 * 90.0 + [w / 2 - 45.0, h / 3 - 45.0]
    return image, kps + np.array([[0.0, 0.0], [0.0, 3.0], [1.5, 0.0], [-1.0, 1.0], [0.5, -0.5]])


# ---- the stand-ins have the real signatures ---------------------------------------------------

@pytest.mark.parametrize(("build", "size", "outputs"), [
    (random_onnx.inswapper_model, 128, ["output"]),
    (random_onnx.hyperswap_model, 256, ["output", "mask"]),
    (random_onnx.simswap_model, 256, ["output"]),
])
def test_swapper_graphs_have_the_real_signature(build, size, outputs):
    model = build(0)
    ins = [(i.name, i.type.tensor_type.elem_type, [d.dim_value for d in i.type.tensor_type.shape.dim])
           for i in model.graph.input]
    assert ins == [("target", onnx.TensorProto.FLOAT, [1, 3, size, size]),
                   ("source", onnx.TensorProto.FLOAT, [1, EMBEDDING_SIZE])]
    assert [o.name for o in model.graph.output] == outputs
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 3, size, size]


def test_inswapper_graph_carries_its_emap_last():
    inits = random_onnx.inswapper_model(0).graph.initializer
    assert numpy_helper.to_array(inits[-1]).shape == (EMBEDDING_SIZE, EMBEDDING_SIZE)
    assert all(numpy_helper.to_array(i).shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) for i in inits[:-1])


# ---- loading and running through the real code ------------------------------------------------

@pytest.mark.parametrize(("module", "name"), [
    (inswapper, "inswapper_128"), (hyperswap, "hyperswap_1a_256"), (hyperswap, "hyperswap_1b_256"),
    (hyperswap, "hyperswap_1c_256"), (simswap, "simswap_256"),
])
def test_each_swapper_swaps_crops_of_its_own_size(cache, photo, module, name):
    swapper = module.load(_cfg(cache), CPU, name)
    image, kps = photo
    assert swapper.name == name and swapper.crop_size == int(name.rsplit("_", 1)[1])
    assert swapper.batch_size == 1  # the published graphs take one face at a time
    crop = align.warp(image, swapper.alignment(kps), swapper.crop_size)
    raw = np.stack([swapper.embed_source(image, kps), swapper.embed_source(image[:, ::-1].copy(), kps)])
    identity = swapper.identity(raw)
    assert identity.shape == (EMBEDDING_SIZE,) and abs(np.linalg.norm(identity) - 1.0) < 1e-5
    out = swapper.swap(np.stack([crop, crop[::-1], crop]), identity)
    assert out.shape == (3, *crop.shape) and out.dtype == np.uint8
    assert np.array_equal(out[0], out[2]) and not np.array_equal(out[0], out[1])


def test_weights_name_the_recognizer_pack_and_the_converter():
    cfg = faces_config()
    assert inswapper.weights(cfg, "inswapper_128") == ["inswapper_128", "buffalo_l"]
    assert hyperswap.weights(cfg, "hyperswap_1b_256") == ["hyperswap_1b_256", "buffalo_l"]
    assert simswap.weights(cfg, "simswap_256") == ["simswap_256", "crossface_simswap", "buffalo_l"]
    for name in (*inswapper.NAMES, *hyperswap.NAMES, *simswap.NAMES, "crossface_simswap"):
        assert name in weights.REGISTRY


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_source_embedding_is_insightface_arcface_on_its_own_crop(cache, photo):
    """buffalo_l's w600k_r50 on norm_crop, raw, whatever pack the detector is configured with."""
    cfg = _cfg(cache)
    cfg.faces.insightface_pack = "antelopev2"  # the detector's pack; the swappers still use buffalo_l
    swapper = hyperswap.load(cfg, CPU, "hyperswap_1a_256")
    image, kps = photo
    arcface = ArcFaceONNX(model_file=str(cache / "insightface/models/buffalo_l/w600k_r50.onnx"))
    arcface.prepare(-1)
    face = type("Face", (), {"kps": kps.astype(np.float32)})()
    theirs = arcface.get(image, face)
    ours = swapper.embed_source(image, kps)
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()
    assert abs(np.linalg.norm(ours) - np.linalg.norm(theirs)) < 1e-3 * np.linalg.norm(theirs)  # raw, not unit


@pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")
def test_inswapper_matches_insightface_inswapper(cache, photo):
    """Same crop, same latent, same output (insightface truncates to uint8, this rounds: <= 1 level)."""
    swapper = inswapper.load(_cfg(cache), CPU)
    image, kps = photo
    path = weights.weight_path("inswapper_128", str(cache))
    upstream = INSwapper(model_file=str(path), session=ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    raw = swapper.embed_source(image, kps)
    source = type("Face", (), {"normed_embedding": raw / np.linalg.norm(raw)})()
    target = type("Face", (), {"kps": kps})()
    theirs, m = upstream.get(image, target, source, paste_back=False)
    np.testing.assert_allclose(swapper.alignment(kps), m, atol=1e-4)
    latent = source.normed_embedding.reshape(1, -1) @ upstream.emap
    np.testing.assert_allclose(swapper.identity(raw[None]), (latent / np.linalg.norm(latent))[0], atol=1e-6)
    ours = swapper.swap(align.warp(image, swapper.alignment(kps), 128)[None], swapper.identity(raw[None]))[0]
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_inswapper_emap_is_read_from_the_last_initializer(tmp_path, photo):
    model = random_onnx.inswapper_model(3)
    permutation = np.eye(EMBEDDING_SIZE, dtype=np.float32)[np.random.default_rng(0).permutation(EMBEDDING_SIZE)]
    model.graph.initializer[-1].CopyFrom(numpy_helper.from_array(permutation, "emap"))
    _install(tmp_path, "inswapper_128", model)
    write_fake_pack(tmp_path, "buffalo_l")
    swapper = inswapper.load(_cfg(tmp_path), CPU)
    np.testing.assert_array_equal(swapper.emap, permutation)
    raw = np.random.default_rng(1).normal(size=(3, EMBEDDING_SIZE)).astype(np.float32)
    mean = normalise(np.mean([normalise(r) for r in raw], axis=0))
    np.testing.assert_allclose(swapper.identity(raw), normalise(mean @ permutation), atol=1e-6)


def test_hyperswap_identity_is_the_renormalised_mean_direction(cache):
    swapper = hyperswap.load(_cfg(cache), CPU, "hyperswap_1c_256")
    raw = np.random.default_rng(2).normal(size=(4, EMBEDDING_SIZE)).astype(np.float32) * [[1.0], [9.0], [3.0], [0.2]]
    expected = normalise(np.mean([r / np.linalg.norm(r) for r in raw], axis=0))
    np.testing.assert_allclose(swapper.identity(raw), expected, atol=1e-6)
    np.testing.assert_allclose(swapper.identity(raw[:1]), normalise(raw[0]), atol=1e-6)  # FaceFusion's embedding_norm


def test_simswap_identity_goes_through_the_converter_then_l2(cache):
    swapper = simswap.load(_cfg(cache), CPU)
    converter = ort.InferenceSession(str(weights.weight_path("crossface_simswap", str(cache))))
    raw = np.random.default_rng(3).normal(size=(1, EMBEDDING_SIZE)).astype(np.float32) * 20
    expected = normalise(converter.run(None, {"input": raw})[0])  # FaceFusion's convert_source_embedding
    np.testing.assert_allclose(swapper.identity(raw), expected, atol=1e-6)


@pytest.mark.parametrize(("module", "name", "mean", "std", "denormalise"), [
    (inswapper, "inswapper_128", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),
    (hyperswap, "hyperswap_1a_256", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), True),
    (simswap, "simswap_256", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
])
def test_crop_conversions_are_facefusions(cache, photo, module, name, mean, std, denormalise):
    """prepare_crop_frame in, normalize_crop_frame out, exactly (up to the final rounding)."""
    swapper = module.load(_cfg(cache), CPU, name)
    image, kps = photo
    crop = align.warp(image, swapper.alignment(kps), swapper.crop_size)
    identity = swapper.identity(swapper.embed_source(image, kps)[None])
    x = (crop[:, :, ::-1] / 255.0 - np.array(mean)) / np.array(std)
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(weights.weight_path(name, str(cache))))
    y = session.run(None, {"source": identity[None], "target": x})[0][0].transpose(1, 2, 0)
    if denormalise:
        y = y * np.array(std) + np.array(mean)
    expected = np.clip(y, 0, 1)[:, :, ::-1] * 255
    ours = swapper.swap(crop[None], identity)[0]
    assert np.abs(ours - expected).max() <= 0.5 + 1e-3


# ---- refusals ----------------------------------------------------------------------------------

def _refused(tmp_path: Path, module, name: str, model: onnx.ModelProto | bytes, match: str) -> None:
    if isinstance(model, bytes):
        path = weights.weight_path(name, str(tmp_path))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model)
    else:
        path = _install(tmp_path, name, model)
    for other, build in GRAPHS.items():
        if other != name and not weights.weight_path(other, str(tmp_path)).exists():
            _install(tmp_path, other, build(0))
    write_fake_pack(tmp_path, "buffalo_l")
    with pytest.raises(BuilderError) as err:
        module.load(_cfg(tmp_path), CPU, module.NAMES[0])
    assert str(err.value).startswith(f"{path}: ") and match in str(err.value), str(err.value)


def test_wrong_input_shape_is_refused_naming_the_file(tmp_path):
    wrong = random_onnx.swapper_model(0, 64, emap=True)
    _refused(tmp_path, inswapper, "inswapper_128", wrong,
             "not the inswapper_128 graph: input 'target' has shape (1, 3, 64, 64), expected (1, 3, 128, 128)")


def test_wrong_input_names_are_refused(tmp_path):
    model = random_onnx.hyperswap_model(0)
    model.graph.input[1].name = "embedding"
    for node in model.graph.node:
        node.input[:] = ["embedding" if i == "source" else i for i in node.input]
    _refused(tmp_path, hyperswap, "hyperswap_1a_256", model,
             "not the hyperswap_1a_256 graph: its inputs are embedding, target, expected source, target")


def test_a_graph_of_the_wrong_model_is_refused(tmp_path):
    # simswap_256.onnx at inswapper's name: a 256 graph and no emap.
    _refused(tmp_path, inswapper, "inswapper_128", random_onnx.simswap_model(0),
             "input 'target' has shape (1, 3, 256, 256), expected (1, 3, 128, 128)")


def test_missing_emap_is_refused(tmp_path):
    _refused(tmp_path, inswapper, "inswapper_128", random_onnx.swapper_model(0, 128),
             "not the inswapper_128 graph: its last initializer 'bias_17' is float32 (3,), not the (512, 512) emap")


def test_wrong_converter_is_refused(tmp_path):
    _refused(tmp_path, simswap, "crossface_simswap", random_onnx.simswap_model(0),
             "not the crossface_simswap graph: its inputs are source, target, expected input")


def test_corrupt_file_is_refused(tmp_path):
    _refused(tmp_path, hyperswap, "hyperswap_1a_256", b"\x00not onnx" * 10, "cannot load as an ONNX model")


def test_missing_file_says_how_to_fetch_it(tmp_path):
    write_fake_pack(tmp_path, "buffalo_l")
    with pytest.raises(MissingWeightError, match=r"hyperswap_1b_256\.onnx.*--fetch hyperswap_1b_256"):
        hyperswap.load(_cfg(tmp_path), CPU, "hyperswap_1b_256")


def test_options_are_refused(cache):
    with pytest.raises(ConfigError, match="the simswap_256 swapper takes no options, got w"):
        simswap.load(_cfg(cache), CPU, "simswap_256", w="0.5")


def test_random_weights_need_no_files(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.runtime.random_weights = True
    for module, name in MODULES.items():
        swapper = module.load(cfg, CPU, name)
        assert swapper.swap(np.zeros((1, swapper.crop_size, swapper.crop_size, 3), np.uint8),
                            swapper.identity(np.ones((1, EMBEDDING_SIZE), np.float32))).shape[0] == 1
    assert not any(tmp_path.iterdir())


def test_swappers_loaded_together_share_one_recognizer(cache):
    cfg = _cfg(cache)
    a, b = inswapper.load(cfg, CPU), hyperswap.load(cfg, CPU, "hyperswap_1b_256")
    assert a.recognizer is b.recognizer
