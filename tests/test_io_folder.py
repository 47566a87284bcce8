"""builder.io.atomic_folder: a folder appears whole or not at all, and a failure keeps the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import BuilderError
from builder.io import atomic_folder


def test_a_finished_folder_replaces_a_partial_one(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "half_written.bin").write_bytes(b"x")
    with atomic_folder(folder, "model") as tmp:
        assert tmp.parent == folder.parent and tmp != folder and not tmp.exists()
        tmp.mkdir()
        (tmp / "weights.bin").write_bytes(b"whole")
        assert not (folder / "weights.bin").exists()  # nothing shows until the block ends
    assert sorted(p.name for p in folder.iterdir()) == ["weights.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no scratch folder left


def test_a_failure_keeps_the_old_folder_and_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "vocab.json").write_text("{}")
    with pytest.raises(BuilderError) as err, atomic_folder(folder, "CLIP tokenizer") as tmp:
        tmp.mkdir()
        (tmp / "vocab.json").write_text("partial")
        raise OSError(28, "No space left on device")
    assert str(err.value) == f"{folder}: cannot write the CLIP tokenizer (No space left on device)"
    assert (folder / "vocab.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]
    with pytest.raises(ValueError), atomic_folder(folder, "CLIP tokenizer"):
        raise ValueError("not an I/O error: passes through unchanged")
    assert (folder / "vocab.json").read_text() == "{}"
