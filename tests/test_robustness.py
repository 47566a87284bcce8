"""Bad inputs: a corpus of broken, odd and awkward files through `launch.py build`, `faces`, `caption`.

Every file gets a per-file reason in the manifest and in the printed summary, no traceback
is printed, and the run goes on. The faces come from real donor photos, downscaled so the
whole corpus runs in seconds with the cheapest real configuration (random weights).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

import launch
from builder.errors import ImageError
from builder.faces import align
from builder.io import append_jsonl, atomic_write_text, load_image, read_jsonl, remove_stale_temps
from builder.manifest import FAILED, KEPT
from builder.swap.fused import FFHQ_SIZE
from tests.fixtures.clip import write_clip_tokenizer
from tests.fixtures.hardening import shared_models

FACES = ("TaylorSwift14.jpeg", "TaylorSwift111.jpeg", "TaylorSwift255.png", "TaylorSwift23.jpeg")
SIDE = 400  # longest side of the corpus photos
MAX_PIXELS = 250_000  # runtime.max_pixels for the corpus run: "huge.png" is over it
CHEAP = [
    "--random-weights", "--detector", "dlib", "--judge", "dlib", "--device", "cpu",
    "--generator", "G_unet_1block", "--restorer", "none", "--no-mouth", "--set", "swap.paste_mask=box",
    "--caption-backend", "none",
]  # fmt: skip


def small(path: Path, side: int = SIDE) -> np.ndarray:
    image = load_image(path)
    scale = side / max(image.shape[:2])
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height, with one row's worth of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_corpus(root: Path, donors_dir: Path) -> dict[str, np.ndarray]:
    """Write the corpus; returns, for each photo with a face, the upright BGR image it should decode to."""
    faces = [small(donors_dir / name) for name in FACES]
    expected: dict[str, np.ndarray] = {}
    root.mkdir(parents=True, exist_ok=True)

    (root / "zero.jpg").write_bytes(b"")
    _, jpeg = cv2.imencode(".jpg", faces[0])
    (root / "truncated.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (root / "text.jpg").write_text("this is not a photo\n", encoding="utf-8")
    cv2.imwrite(str(root / "tiny.png"), faces[0][:8, :8])
    big = cv2.resize(faces[1], (700, 400))  # 280,000 px > MAX_PIXELS
    cv2.imwrite(str(root / "huge.png"), big)
    cv2.imwrite(str(root / "noface.png"), cv2.resize(faces[0][:60, :60], (300, 300)))
    os.symlink("does-not-exist.jpg", root / "dangling.jpg")
    os.symlink(".", root / "loop")  # a folder that contains itself
    (root / "nested" / "deeper").mkdir(parents=True)
    os.symlink("../..", root / "nested" / "deeper" / "up")  # a loop two levels down

    # PNG with alpha: transparent outside a central window; alpha composites onto white.
    rgba = cv2.cvtColor(faces[0], cv2.COLOR_BGR2BGRA)
    rgba[:, :, 3] = 0
    h, w = rgba.shape[:2]
    rgba[h // 8 : h - h // 8, w // 8 : w - w // 8, 3] = 255
    cv2.imwrite(str(root / "alpha.png"), rgba)
    white = np.full_like(faces[0], 255)
    white[h // 8 : h - h // 8, w // 8 : w - w // 8] = faces[0][h // 8 : h - h // 8, w // 8 : w - w // 8]
    expected["alpha.png"] = white

    # 16-bit RGB PNG: the same picture, scaled to 0..65535.
    cv2.imwrite(str(root / "deep16.png"), faces[1].astype(np.uint16) * 257)
    expected["deep16.png"] = faces[1]

    grey = cv2.cvtColor(faces[2], cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(root / "grey.jpg"), grey, [cv2.IMWRITE_JPEG_QUALITY, 98])
    expected["grey.jpg"] = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)

    Image.fromarray(faces[3][:, :, ::-1]).convert("CMYK").save(root / "cmyk.jpg", quality=98)
    expected["cmyk.jpg"] = faces[3]

    # EXIF orientation 6: the pixels are stored turned 90 degrees counter-clockwise and the
    # viewer must turn them clockwise. The upright picture (landscape) has the face.
    upright = faces[0]
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright[:, :, ::-1]).copy()).save(root / "rotated.jpg", quality=98, exif=exif)
    expected["rotated.jpg"] = upright

    weird = "Zoë café 写真 (1).png"
    cv2.imencode(".png", faces[1])[1].tofile(str(root / weird))
    expected[weird] = faces[1]
    for sub, image in (("a", faces[2]), ("b", faces[3])):
        (root / sub).mkdir()
        cv2.imwrite(str(root / sub / "face.png"), image)
        expected[f"{sub}/face.png"] = image
    cv2.imwrite(str(root / "nested" / "deeper" / "face.png"), faces[0])
    expected["nested/deeper/face.png"] = faces[0]
    return expected


# Unusable files: manifest key -> words its reason must contain.
UNUSABLE = {
    "zero.jpg": "empty file (0 bytes)",
    "truncated.jpg": "not a readable image",
    "text.jpg": "not a readable image",
    "tiny.png": "only 8x8 pixels",
    "huge.png": "over the limit",
    "dangling.jpg": "cannot read",
}


@pytest.fixture(scope="module", autouse=True)
def _one_model_load():
    with shared_models():
        yield


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip_tokenizer(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, data_dir, source_photo, clip):
    """One build over the whole corpus, with a source folder where one of three sources fails."""
    root = tmp_path_factory.mktemp("corpus")
    donors = root / "donors"
    expected = make_corpus(donors, data_dir / "donors")
    sources = root / "sources"
    sources.mkdir()
    cv2.imwrite(str(sources / "good.png"), small(source_photo))
    cv2.imwrite(str(sources / "wall.png"), cv2.resize(small(data_dir / "donors" / FACES[0])[:60, :60], (300, 300)))
    (sources / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    out = root / "run"
    argv = ["build", "--source", str(sources), "--donors", str(donors), "--out", str(out), *CHEAP,
            "--batch-size", "3", "--set", f"runtime.max_pixels={MAX_PIXELS}", "--set", f"caption.clip_tokenizer={clip}"]  # fmt: skip
    return donors, out, expected, launch.main(argv), sources


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = launch.main(argv)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_corpus_build_goes_on_and_records_a_reason_per_file(corpus_run):
    donors, out, expected, rc, _ = corpus_run
    assert rc == 0
    records = {r["key"]: r for r in read_jsonl(out / "manifest.jsonl")}
    assert set(records) == set(UNUSABLE) | set(expected) | {"noface.png"}  # no path through a loop
    for key, words in UNUSABLE.items():
        r = records[key]
        assert r["status"] == FAILED and r["output"] is None, key
        assert len(r["reasons"]) == 1 and words in r["reasons"][0], (key, r["reasons"])
        assert str(donors / key) in r["reasons"][0]  # the reason names the file
        assert "Traceback" not in r["reasons"][0]
    assert "runtime.max_pixels" in records["huge.png"]["reasons"][0]
    assert records["noface.png"]["status"] == FAILED and records["noface.png"]["reasons"] == ["no face"]
    for key in expected:
        assert records[key]["status"] == KEPT, (key, records[key]["reasons"])
    # Same name in two folders, and a name no filesystem should trip on: distinct, ASCII outputs.
    outputs = [Path(records[k]["output"]).name for k in expected]
    assert len(set(outputs)) == len(outputs)
    assert all(name.isascii() and " " not in name for name in outputs)
    assert Path(records["Zoë café 写真 (1).png"]["output"]).name.startswith("Zoe_cafe_")


def test_corpus_results_are_upright_full_size_and_decoded_right(corpus_run):
    """Each odd format decodes to the picture it shows; the result keeps it outside the face."""
    _, out, expected, _, _ = corpus_run
    records = {r["key"]: r for r in read_jsonl(out / "manifest.jsonl")}
    for key, want in expected.items():
        r = records[key]
        got = load_image(Path(r["input"]))
        assert got.shape == want.shape, key
        lossy = key.endswith(".jpg")
        assert np.abs(got.astype(int) - want.astype(int)).mean() < (3.0 if lossy else 0.01), key
        result = load_image(out / r["output"])
        assert result.shape == want.shape, key
        m = np.array(r["transforms"]["ffhq"])
        footprint = align.paste_back(
            np.zeros(want.shape[:2], np.uint8), np.full((FFHQ_SIZE, FFHQ_SIZE), 255, np.uint8), m,
            np.ones((FFHQ_SIZE, FFHQ_SIZE), np.float32),
        ) > 0
        assert footprint.mean() < 0.9
        np.testing.assert_array_equal(result[~footprint], got[~footprint])
    # The EXIF-rotated photo: stored portrait, shown landscape; the face is found where it is upright.
    stored = Image.open(Path(records["rotated.jpg"]["input"]))
    assert stored.size[0] < stored.size[1]
    upright = expected["rotated.jpg"]
    assert upright.shape[1] > upright.shape[0]
    face_box = np.array(records["rotated.jpg"]["face"]["box"])
    twin_box = np.array(records["nested/deeper/face.png"]["face"]["box"])  # the same photo, stored upright
    np.testing.assert_allclose(face_box, twin_box, atol=4.0)


def test_corpus_summary_names_each_bad_file_without_traceback(corpus_run, data_dir, source_photo, clip, capsys):
    """Rerun on the finished corpus (no model is loaded): the summary still lists every bad file."""
    donors, out, _, _, sources = corpus_run
    argv = ["build", "--source", str(sources), "--donors", str(donors), "--out", str(out), *CHEAP,
            "--set", f"runtime.max_pixels={MAX_PIXELS}", "--set", f"caption.clip_tokenizer={clip}"]  # fmt: skip
    rc, text = _run(argv, capsys)
    assert rc == 0, text
    flat = " ".join(text.split())
    for key in UNUSABLE:
        assert key in flat, key
    assert "0 bytes" in flat and "8x8" in flat and "700x400 is 0.28 megapixels, over the limit of 0.25" in flat
    assert "Traceback" not in text


def test_one_failing_source_is_reported_and_the_rest_used(corpus_run):
    _, out, _, rc, sources = corpus_run
    assert rc == 0
    report = json.loads((out / "source_identity.json").read_text(encoding="utf-8"))
    assert report["used"] == [str(sources / "good.png")]
    failed = dict(report["failed"])
    assert set(failed) == {str(sources / "wall.png"), str(sources / "broken.jpg")}
    assert failed[str(sources / "wall.png")] == "no face found"
    assert "not a readable image" in failed[str(sources / "broken.jpg")]


def test_source_with_no_face_is_a_clear_error(tmp_path, data_dir, clip, capsys):
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), cv2.resize(small(data_dir / "donors" / FACES[0])[:60, :60], (300, 300)))
    donors = tmp_path / "donors"
    donors.mkdir()
    cv2.imwrite(str(donors / "face.png"), small(data_dir / "donors" / FACES[0]))
    rc, text = _run(["build", "--source", str(wall), "--donors", str(donors), "--out", str(tmp_path / "run"), *CHEAP,
                     "--set", f"caption.clip_tokenizer={clip}"], capsys)  # fmt: skip
    assert rc == 2
    flat = " ".join(text.split())
    assert "no usable source face" in flat and f"{wall}: no face found" in flat
    assert "Traceback" not in text
    assert not (tmp_path / "run" / "manifest.jsonl").exists()  # nothing was swapped against no identity


def test_faces_command_on_the_corpus(corpus_run, tmp_path, capsys):
    donors, _, expected, _, _ = corpus_run
    rc, text = _run(["faces", str(donors), "--out", str(tmp_path), "--detector", "dlib", "--judge", "dlib",
                     "--set", f"runtime.max_pixels={MAX_PIXELS}"], capsys)  # fmt: skip
    assert rc == 0, text
    assert "Traceback" not in text
    records = {Path(r["path"]).relative_to(donors).as_posix(): r for r in read_jsonl(tmp_path / "faces.jsonl")}
    assert set(records) == set(UNUSABLE) | set(expected) | {"noface.png"}
    for key, words in UNUSABLE.items():
        assert words in records[key]["error"], key
    for key in expected:
        assert records[key]["chosen"] == 0, key
    assert records["noface.png"]["faces"] == []
    # Same-named photos in different folders keep their own crop files.
    crops = [f["crop"] for r in records.values() for f in r.get("faces", [])]
    assert len(crops) == len(set(crops)) and all((tmp_path / c).is_file() for c in crops)


def test_caption_command_skips_bad_images_with_reasons(corpus_run, tmp_path, clip, capsys):
    _, out, _, _, _ = corpus_run
    dataset = tmp_path / "img" / "3_ohwx woman"
    shutil.copytree(next((out / "img").iterdir()), dataset)
    for caption in dataset.glob("*.txt"):
        caption.unlink()
    (dataset / "empty.png").write_bytes(b"")
    (dataset / "notes.png").write_text("not an image", encoding="utf-8")
    rc, text = _run(["caption", str(tmp_path), "--backend", "none", "--set", f"caption.clip_tokenizer={clip}"], capsys)
    assert "Traceback" not in text
    flat = " ".join(text.split())
    assert "empty.png" in flat and "notes.png" in flat
    good = [p for p in dataset.glob("*.png") if p.name not in ("empty.png", "notes.png")]
    assert all(p.with_suffix(".txt").read_text(encoding="utf-8").strip() == "ohwx, woman" for p in good)
    assert rc != 0 or not (dataset / "empty.txt").exists()


# --- load_image and the write helpers, without models ---


def test_pixel_limit_reads_only_the_header(tmp_path, monkeypatch):
    """A 40000x40000 PNG header with no pixel data: refused by size before any decoding."""
    path = tmp_path / "bomb.png"
    png_header_only(path, 40_000, 40_000)
    assert path.stat().st_size < 1000

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageError, match=r"40000x40000 is 1600 megapixels, over the limit of 60 \(runtime.max_pixels\)"):
        load_image(path)


def test_dark_16_bit_photo_keeps_its_levels(tmp_path):
    """A dim 16-bit greyscale frame (all values < 256) is dim, not stretched to full white."""
    dim = np.tile(np.arange(0, 250, 1, dtype=np.uint16), (40, 1))
    path = tmp_path / "dim16.png"
    Image.fromarray(dim).save(path)
    assert Image.open(path).mode.startswith("I;16")
    assert load_image(path).max() <= 1


def test_bad_exif_is_a_reason_not_a_crash(tmp_path, data_dir, monkeypatch):
    path = tmp_path / "exif.jpg"
    cv2.imwrite(str(path), small(data_dir / "donors" / FACES[0], 100))

    def broken(image, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr("builder.io.ImageOps.exif_transpose", broken)
    with pytest.raises(ImageError, match=r"exif.jpg: not a readable image \(unpack requires"):
        load_image(path)


def test_append_after_a_torn_line_keeps_the_new_record(tmp_path):
    path = tmp_path / "manifest.jsonl"
    append_jsonl(path, {"key": "a"})
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "b", "sta')  # killed mid-write
    append_jsonl(path, {"key": "c"})
    assert [r["key"] for r in read_jsonl(path)] == ["a", "c"]


def test_outputs_get_normal_permissions_and_stale_temps_are_removed(tmp_path):
    target = tmp_path / "img" / "0001.txt"
    atomic_write_text(target, "ohwx, woman")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    stale = tmp_path / "img" / ".0002.png.k3j4.tmp.png"
    stale.write_bytes(b"half")
    keep = tmp_path / "img" / "notes.tmp"  # not one of ours
    keep.write_text("user file")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and keep.exists() and target.read_text() == "ohwx, woman"
