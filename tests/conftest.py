"""Shared test fixtures: where the real photos are, and a clean torch setup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_data() -> Path:
    """The shared photos: $LORA_BUILDER_TEST_DATA, else ../shared/data beside the checkout,
    else the workspace's /work/shared/data (a clone elsewhere, e.g. a CI check in /tmp)."""
    candidates = [os.environ.get("LORA_BUILDER_TEST_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return REPO.parent / "shared" / "data"


DATA = _find_data()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test photos not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def source_photo(data_dir: Path) -> Path:
    return data_dir / "source" / "5-10.png"


@pytest.fixture(scope="session")
def donor_photos(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "donors").iterdir())


@pytest.fixture(scope="module")
def dlib_cfg():
    """CPU, random weights, dlib detector and judge: the real-photo swap tests' setup, which needs
    no insightface pack. Per module, so one module's edits to it never reach another."""
    from builder.config import Config

    cfg = Config()
    cfg.faces.detector = cfg.faces.judge = "dlib"
    cfg.runtime.random_weights = True
    cfg.runtime.device = "cpu"
    return cfg


@pytest.fixture(scope="session", autouse=True)
def isolated_weights_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write into the user's weights cache (e.g. the CLIP tokenizer the kohya files build)."""
    from builder import weights

    mp = pytest.MonkeyPatch()
    mp.setenv(weights.ENV_VAR, str(tmp_path_factory.mktemp("weights-cache")))
    yield
    mp.undo()
