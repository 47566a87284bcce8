"""overrides.json and settle without any model: a person's keep/reject and caption win, the
manifest says who decided, and the counts tell one story."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from builder.build import settle
from builder.errors import BuilderError
from builder.faces.align import closeup_box
from builder.io import write_image
from builder.manifest import (
    BY_OVERRIDE,
    BY_RANDOM_WEIGHTS,
    BY_SCORES,
    FAILED,
    KEPT,
    REJECTED,
    Manifest,
    Record,
    Tally,
    result_name,
)
from builder.overrides import OVERRIDES, load_overrides, set_override
from builder.quality.decide import FAR_FROM_SOURCE, assess
from builder.quality.scores import Scores
from tests.fixtures.kohya import tiny_config

GOOD = {"det_score": 0.9, "face_px": 200.0, "blur_ratio": 1.0, "source_similarity": 0.9, "donor_similarity": 0.1, "yaw": 0.0, "pitch": 0.0, "judge": "dlib"}


def make_run(out: Path, photos: dict[str, dict]) -> Manifest:
    """A manifest with one scored result per photo (distinct random pictures, so no duplicates)."""
    cfg = tiny_config()
    manifest = Manifest(out / "manifest.jsonl")
    rng = np.random.default_rng(0)
    for key, scores in photos.items():
        name = result_name(key)
        write_image(out / "results" / name, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        q = assess(name, Scores(**{**GOOD, **scores}, phash=f"{rng.integers(0, 2**63):016x}"), cfg.quality)
        status = KEPT if q.decision.kept else REJECTED
        manifest.add(Record(key=key, input=key, status=status, reasons=list(q.decision.reasons), output=f"results/{name}", quality=q.to_dict()))
    manifest.add(Record(key="noface.jpg", input="noface.jpg", status=FAILED, reasons=["no face"]))
    return manifest


def folder_names(out: Path) -> list[str]:
    (folder,) = (out / "img").iterdir()
    return sorted(p.name for p in folder.iterdir())


def test_set_and_clear_overrides_with_who_and_when(tmp_path):
    stamp = set_override(tmp_path, "a.jpg", "status", REJECTED, by="alice (review page)")
    assert stamp.by == "alice (review page)" and stamp.at.endswith("+00:00")
    set_override(tmp_path, "a.jpg", "caption", "ohwx, woman")
    data = json.loads((tmp_path / OVERRIDES).read_text())
    assert data["a.jpg"]["status"] == {"value": REJECTED, "by": "alice (review page)", "at": stamp.at}
    assert data["a.jpg"]["caption"]["value"] == "ohwx, woman" and data["a.jpg"]["caption"]["by"].endswith("(review page)")
    set_override(tmp_path, "a.jpg", "status", None)
    assert set(load_overrides(tmp_path)["a.jpg"]) == {"caption"}
    set_override(tmp_path, "a.jpg", "caption", None)
    assert load_overrides(tmp_path) == {}


def test_bad_overrides_are_refused_with_the_file_named(tmp_path):
    with pytest.raises(BuilderError, match="status must be kept or rejected, not 'maybe'"):
        set_override(tmp_path, "a.jpg", "status", "maybe")
    (tmp_path / OVERRIDES).write_text("{broken")
    with pytest.raises(BuilderError, match=f"{OVERRIDES}: not valid JSON"):
        load_overrides(tmp_path)
    (tmp_path / OVERRIDES).write_text(json.dumps({"a.jpg": {"status": {"value": "later"}}}))
    with pytest.raises(BuilderError, match=re.escape("'a.jpg' status override 'later' is not kept or rejected")):
        load_overrides(tmp_path)


def test_concurrent_edits_of_one_photo_keep_both_fields(tmp_path):
    def edit(field: str, values: list[str]) -> None:
        for v in values:
            set_override(tmp_path, "a.jpg", field, v, by=field)

    statuses = [KEPT, REJECTED] * 10
    captions = [f"caption {i}" for i in range(20)]
    threads = [threading.Thread(target=edit, args=("status", statuses)), threading.Thread(target=edit, args=("caption", captions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = load_overrides(tmp_path)["a.jpg"]
    assert saved["status"].value == statuses[-1] and saved["caption"].value == captions[-1]


def test_settle_honours_overrides_and_says_who_decided(tmp_path):
    manifest = make_run(tmp_path, {"good.jpg": {}, "fine.jpg": {}, "far.jpg": {"source_similarity": 0.2}})
    cfg = tiny_config()
    settle(tmp_path, cfg, manifest)
    assert folder_names(tmp_path) == sorted([result_name("good.jpg"), result_name("fine.jpg")])

    set_override(tmp_path, "good.jpg", "status", REJECTED, by="alice")
    set_override(tmp_path, "far.jpg", "status", KEPT, by="alice")
    set_override(tmp_path, "far.jpg", "caption", "ohwx, woman, by hand", by="alice")
    settle(tmp_path, cfg, Manifest(tmp_path / "manifest.jsonl"))
    recs = Manifest(tmp_path / "manifest.jsonl").records
    assert (recs["good.jpg"].status, recs["good.jpg"].decided_by, recs["good.jpg"].reasons) == (REJECTED, BY_OVERRIDE, [])
    assert (recs["far.jpg"].status, recs["far.jpg"].decided_by, recs["far.jpg"].reasons) == (KEPT, BY_OVERRIDE, [FAR_FROM_SOURCE])
    assert recs["far.jpg"].override["by"] == "alice" and recs["far.jpg"].quality["kept"] is False
    assert (recs["fine.jpg"].status, recs["fine.jpg"].decided_by) == (KEPT, BY_SCORES)
    far = result_name("far.jpg")
    assert folder_names(tmp_path) == sorted([result_name("fine.jpg"), far, far.replace(".png", ".txt")])
    assert (next((tmp_path / "img").iterdir()) / far.replace(".png", ".txt")).read_text() == "ohwx, woman, by hand"
    tally = Tally.of(list(recs.values()))
    assert tally.describe() == "2 kept, 1 rejected, 1 unusable; the scores kept 2 of 3; kept by a person: 1; rejected by a person: 1"


def test_random_weights_keep_everything_but_record_the_scores_verdict(tmp_path):
    manifest = make_run(tmp_path, {"good.jpg": {}, "far.jpg": {"source_similarity": 0.2}})
    cfg = tiny_config()
    cfg.runtime.random_weights = True
    settle(tmp_path, cfg, manifest)
    recs = manifest.records
    assert (recs["far.jpg"].status, recs["far.jpg"].decided_by, recs["far.jpg"].reasons) == (KEPT, BY_RANDOM_WEIGHTS, [FAR_FROM_SOURCE])
    assert Tally.of(list(recs.values())).describe() == (
        "2 kept, 0 rejected, 1 unusable; the scores kept 1 of 2; kept anyway: 1 (--random-weights keeps every result)"
    )


def test_closeup_box_is_a_square_inside_the_image():
    assert closeup_box(np.array([40, 50, 60, 80]), (200, 300, 3)) == (26, 41, 74, 89)  # 1.6 x 30 = 48
    x0, y0, x1, y1 = closeup_box(np.array([0, 0, 30, 30]), (100, 100, 3))  # shifted in, not squashed
    assert (x0, y0) == (0, 0) and x1 - x0 == y1 - y0 == 48
    assert closeup_box(np.array([0, 0, 100, 100]), (60, 120, 3)) == (20, 0, 80, 60)  # capped at the image
