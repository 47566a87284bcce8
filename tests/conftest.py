"""Shared test fixtures: where the real photos are, and a clean torch setup."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


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


@pytest.fixture(scope="session", autouse=True)
def isolated_weights_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write into the user's weights cache (e.g. the CLIP tokenizer the kohya files build)."""
    from builder import weights

    mp = pytest.MonkeyPatch()
    mp.setenv(weights.ENV_VAR, str(tmp_path_factory.mktemp("weights-cache")))
    yield
    mp.undo()
