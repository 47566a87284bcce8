"""Interruption: SIGKILL at random points, Ctrl-C, a full disk and a read-only output.

A `launch.py build` child is killed after random delays and started again until it
finishes; the run folder must then equal, file by file, that of an uninterrupted run.
Runs are deterministic (batch size 1, one thread, fixed seed), so equal means equal bytes.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch

import builder.io
import launch
from builder.io import load_image, read_jsonl
from tests.fixtures.clip import write_clip_tokenizer
from tests.fixtures.hardening import shared_models

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("TaylorSwift14.jpeg", "TaylorSwift111.jpeg", "TaylorSwift255.png", "TaylorSwift23.jpeg", "TaylorSwift219.jpeg")
MORE = ("TaylorSwift38.jpeg", "TaylorSwift44.jpeg")  # added to a finished run by the write-failure tests
KILLS = 5
CHILD_STARTUP = 3.0  # seconds a child spends importing before the build starts
CHILD = (
    "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]); "
    "import launch; sys.exit(launch.main(sys.argv[2:]))"
)


def build_argv(donors: Path, out: Path, source: Path, clip: Path) -> list[str]:
    return [
        "build", "--source", str(source), "--donors", str(donors), "--out", str(out),
        "--random-weights", "--detector", "dlib", "--judge", "dlib", "--device", "cpu",
        "--generator", "G_unet_1block", "--restorer", "none", "--no-mouth", "--set", "swap.paste_mask=box",
        "--batch-size", "1", "--caption-backend", "none", "--set", f"caption.clip_tokenizer={clip}",
    ]  # fmt: skip


def start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), *argv],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # A CI job started in the background inherits SIGINT ignored, and Python then never
        # turns Ctrl-C into KeyboardInterrupt: give the child the terminal's default back.
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def snapshot(out: Path) -> dict[str, object]:
    """Every file under the run folder; the run folder's own path and the timings are neutralised."""
    files: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        if rel == "manifest.jsonl":
            records = read_jsonl(p)
            for r in records:
                r.pop("timings", None)
            files[rel] = records
        else:
            files[rel] = p.read_bytes().replace(str(out).encode(), b"<OUT>")
    return files


def check_clean(out: Path) -> None:
    for p in out.rglob("*"):
        assert ".tmp" not in p.name, f"leftover temporary file {p}"
        if p.is_file():
            assert p.stat().st_size > 0, f"empty file {p}"
    keys = [r["key"] for r in read_jsonl(out / "manifest.jsonl")]
    assert len(keys) == len(set(keys)), "a photo has two manifest records"


@pytest.fixture(scope="module", autouse=True)
def _one_model_load():
    with shared_models():
        yield


def shrink(src: Path, dst: Path, side: int = 360) -> None:
    image = load_image(src)
    scale = side / max(image.shape[:2])
    cv2.imwrite(str(dst), cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, data_dir, source_photo):
    root = tmp_path_factory.mktemp("interrupt")
    donors = root / "donors"
    donors.mkdir()
    for name in PHOTOS:
        shrink(data_dir / "donors" / name, donors / f"{Path(name).stem}.png")
    source = root / "source.png"
    image = load_image(source_photo)
    cv2.imwrite(str(source), cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA))
    clip = write_clip_tokenizer(root / "clip")
    return root, donors, source, clip


@pytest.fixture(scope="module")
def reference(setup):
    """The uninterrupted run, in-process on one thread like the children; its wall time.

    In-process so its models are loaded once and shared with the write-failure tests.
    """
    root, donors, source, clip = setup
    out = root / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.monotonic()
        assert launch.main(build_argv(donors, out, source, clip)) == 0
        seconds = time.monotonic() - t0
    finally:
        torch.set_num_threads(threads)
    return out, seconds + CHILD_STARTUP


def test_ctrl_c_and_sigkill_at_random_points_then_resume_give_the_same_dataset(setup, reference):
    root, donors, source, clip = setup
    ref_out, ref_seconds = reference
    out = root / "killed"
    argv = build_argv(donors, out, source, clip)

    # Ctrl-C once a photo is done: a clean stop with a message and exit code 130.
    proc = start(argv)
    deadline = time.monotonic() + 120
    while proc.poll() is None and lines(out / "manifest.jsonl") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "interrupted" in text and "Traceback" not in text
    assert 1 <= len(read_jsonl(out / "manifest.jsonl")) < len(PHOTOS)
    check_clean(out)

    # Then SIGKILLs. "record": just after a photo's manifest record lands (mid-build);
    # "image": just after the first kohya image appears (settling, captions, TOMLs);
    # "delay": anywhere in the run, startup and model loading included.
    rng = random.Random(20240607)
    plan = ["record", "delay", "record", "image", "delay", "record", "delay", "image"]
    landed: list[tuple[str, float, int, int]] = []  # trigger, seconds, records, kohya images
    for trigger in plan:
        if len(landed) >= KILLS:
            break
        before = lines(out / "manifest.jsonl")
        proc = start(argv)
        t0 = time.monotonic()
        deadline = t0 + (rng.uniform(0.5, ref_seconds) if trigger == "delay" else 120)
        while proc.poll() is None and time.monotonic() < deadline:
            if trigger == "record" and lines(out / "manifest.jsonl") > before:
                time.sleep(rng.uniform(0.0, 0.3))
                break
            if trigger == "image" and any((out / "img").glob("*/*.png")):
                time.sleep(rng.uniform(0.0, 0.2))
                break
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            state = (lines(out / "manifest.jsonl"), len(list((out / "img").glob("*/*.png"))))
            landed.append((trigger, round(time.monotonic() - t0, 2), *state))
        proc.communicate(timeout=60)
    print("kills (trigger, seconds after start, manifest lines, kohya images):", landed)
    assert len(landed) >= KILLS, f"only {len(landed)} runs were still going when killed: {landed}"
    assert any(0 < records < len(PHOTOS) for _, _, records, _ in landed), "no kill landed mid-build"

    proc = start(argv)
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text
    check_clean(out)
    got, want = snapshot(out), snapshot(ref_out)
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs from the uninterrupted run"
    images = sorted((out / "img").glob("*/*.png"))
    assert len(images) == len(PHOTOS)
    assert all(p.with_suffix(".txt").read_text(encoding="utf-8").strip() == "ohwx, woman" for p in images)


# --- a full disk and a read-only output, simulated in-process ---


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def resume_with_more_photos(setup, reference, data_dir, tmp_path) -> tuple[Path, dict[str, bytes], list[str]]:
    """A copy of the finished reference run, and its donor folder with two new photos."""
    _, donors, source, clip = setup
    more = tmp_path / "donors"
    shutil.copytree(donors, more)
    for name in MORE:
        shrink(data_dir / "donors" / name, more / f"{Path(name).stem}.png")
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return out, files_of(out), build_argv(more, out, source, clip)


def fail_writes_under(monkeypatch, folder: Path, err: int, after: int = 0) -> list[str]:
    """Make fsync of files under ``folder`` fail with ``err`` after ``after`` successful ones."""
    real = os.fsync
    calls: list[str] = []

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target.startswith(str(folder)):
            calls.append(target)
            if len(calls) > after:
                raise OSError(err, os.strerror(err))
        real(fd)

    monkeypatch.setattr(builder.io.os, "fsync", fsync)
    return calls


def assert_intact(out: Path, before: dict[str, bytes]) -> None:
    """Everything written before the failure is still there, unchanged or replaced whole."""
    after = files_of(out)
    records = read_jsonl(out / "manifest.jsonl")
    assert len(records) == lines(out / "manifest.jsonl")  # every line parses
    old = {json.loads(line)["key"] for line in before["manifest.jsonl"].decode().splitlines()}
    assert old <= {r["key"] for r in records}
    for rel, data in before.items():
        if rel != "manifest.jsonl":
            assert after.get(rel) == data, f"{rel} changed"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_disk_full_fails_clearly_and_keeps_what_was_written(setup, reference, data_dir, tmp_path, monkeypatch, capsys):
    out, before, argv = resume_with_more_photos(setup, reference, data_dir, tmp_path)
    # A result writes its loss mask (results/masks/) and then its image: two files under results/.
    calls = fail_writes_under(monkeypatch, out / "results", errno.ENOSPC, after=2)
    capsys.readouterr()
    assert launch.main(argv) == 2
    text = " ".join(capsys.readouterr().err.split())
    assert len(calls) == 3, calls  # the first new result was written, the second hit the full disk
    assert "/masks/" in calls[0] and "/masks/" not in calls[1]
    assert f"cannot write {out / 'results'}/" in text and "No space left on device" in text
    assert "Traceback" not in text
    assert_intact(out, before)
    assert len(read_jsonl(out / "manifest.jsonl")) == len(PHOTOS) + 1  # one new photo finished before the disk filled

    monkeypatch.undo()
    # A killed run's half-written files are swept on the next start.
    stale = [out / "results" / ".x.png.a1b2.tmp.png", next((out / "img").iterdir()) / ".x.txt.c3d4.tmp.txt"]
    for p in stale:
        p.write_bytes(b"half")
    assert launch.main(argv) == 0  # room again: the run resumes and completes
    assert len(read_jsonl(out / "manifest.jsonl")) == len(PHOTOS) + 2
    assert not any(p.exists() for p in stale)
    check_clean(out)


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_read_only_output_fails_clearly_and_keeps_what_was_written(
    setup, reference, data_dir, tmp_path, monkeypatch, capsys, err
):
    out, before, argv = resume_with_more_photos(setup, reference, data_dir, tmp_path)
    real_open = open

    def mkstemp(*args, dir=None, **kwargs):
        raise OSError(err, os.strerror(err), str(dir))

    def append_open(path, mode="r", *args, **kwargs):
        if "a" in mode:
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builder.io.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(builder.io, "open", append_open, raising=False)
    capsys.readouterr()
    assert launch.main(argv) == 2
    text = " ".join(capsys.readouterr().err.split())
    assert f"cannot write {out}/" in text and os.strerror(err) in text and "Traceback" not in text
    assert_intact(out, before)


def test_output_under_a_file_is_a_clear_error(setup, tmp_path, capsys):
    _, donors, source, clip = setup
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    capsys.readouterr()
    assert launch.main(build_argv(donors, blocker / "run", source, clip)) == 2
    text = " ".join(capsys.readouterr().err.split())
    assert f"cannot create the output folder {blocker / 'run'}: Not a directory" in text
    assert "Traceback" not in text
