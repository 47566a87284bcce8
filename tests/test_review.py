"""`launch.py review`: overrides that settle and survive re-runs, one story under --random-weights,
the server's safety, and the page itself in Debian's headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import launch
from builder.io import append_jsonl
from builder.manifest import (
    BY_OVERRIDE,
    BY_RANDOM_WEIGHTS,
    KEPT,
    REJECTED,
    Tally,
    read_jsonl,
    result_name,
)
from builder.overrides import OVERRIDES, load_overrides, set_override
from tests.fixtures.review import (
    DONORS,
    build_random_run,
    chromium,
    chromium_or_skip,
    serving,
    write_samples,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_dir, source_photo):
    return build_random_run(tmp_path_factory.mktemp("review"), data_dir, source_photo)


@pytest.fixture
def run_copy(built, tmp_path):
    """A private copy of the built run folder, so each test's decisions are its own."""
    out, clip, args = built
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return copy, clip, [copy.as_posix() if a == out.as_posix() else a for a in args]


def records(out: Path) -> dict:
    return {r["key"]: r for r in read_jsonl(out / "manifest.jsonl")}


def training_folder(out: Path) -> Path:
    (folder,) = (out / "img").iterdir()
    return folder


def request(server, method: str, path: str, body=None, token: str | None = "page", host: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token == "page":
        token = server.app.token
    if token is not None:
        headers["X-Review-Token"] = token
    if host is not None:
        headers["Host"] = host
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers)
    res = conn.getresponse()
    payload = res.read()
    conn.close()
    return res.status, res.getheader("Content-Type", ""), payload


# --- item 7: one story ---


def test_terminal_manifest_and_page_tell_one_story(run_copy, capsys):
    out, clip, args = run_copy
    assert launch.main(args) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps lines
    recs = list(records(out).values())
    scored = [r for r in recs if r["status"] != "failed"]
    by_scores = sum(r["quality"]["kept"] for r in scored)
    assert len(scored) == len(DONORS) and len(recs) == len(DONORS) + 1
    assert f"Quality filter: the scores kept {by_scores} of {len(DONORS)} results" in err
    assert f"2 kept, 0 rejected, 1 unusable; the scores kept {by_scores} of 2" in err
    if by_scores < 2:
        assert f"kept anyway: {2 - by_scores} (--random-weights keeps every result)" in err
    for r in scored:  # the manifest: kept, by whom, and what the scores said
        assert r["status"] == KEPT and r["decided_by"] == BY_RANDOM_WEIGHTS
        assert r["reasons"] == r["quality"]["reasons"]
        assert r["quality"]["kept"] == (not r["reasons"])
    from builder.manifest import Record
    from builder.review.cards import page_state

    with serving(out, clip) as server:
        state = page_state(out, server.app.cfg, server.app.counter)
    assert state["tally"]["story"] == Tally.of([Record.from_dict(r) for r in recs]).describe()
    assert state["tally"]["story"] in err


# --- overrides and settle ---


def test_overrides_survive_build_and_caption_reruns_and_move_the_repeats(run_copy):
    out, clip, args = run_copy
    rejected, edited = DONORS
    before = training_folder(out)
    set_override(out, rejected, "status", REJECTED, by="alice (review page)")
    set_override(out, edited, "caption", "ohwx, woman, hand-written caption", by="alice (review page)")
    assert launch.main(args) == 0  # a later build settles with the overrides, never undoes them

    recs = records(out)
    assert recs[rejected]["status"] == REJECTED and recs[rejected]["decided_by"] == BY_OVERRIDE
    assert recs[rejected]["override"]["by"] == "alice (review page)" and recs[rejected]["override"]["at"]
    assert recs[edited]["status"] == KEPT
    folder = training_folder(out)
    assert sorted(p.name for p in folder.glob("*.png")) == [result_name(edited)]
    assert not (folder / result_name(rejected)).with_suffix(".txt").exists()  # its caption went with it
    caption = (folder / result_name(edited)).with_suffix(".txt")
    assert caption.read_text(encoding="utf-8") == "ohwx, woman, hand-written caption"
    # 1 image instead of 2: the repeats double (target 1600 steps, 10 epochs, batch 1)
    assert int(before.name.split("_")[0]) == 80 and folder.name == "160_ohwx woman"
    assert f'image_dir = "{folder.as_posix()}"' in (out / "dataset_config.toml").read_text(encoding="utf-8")
    assert "num_repeats = 160" in (out / "dataset_config.toml").read_text(encoding="utf-8")

    # Re-captioning in overwrite mode re-captions the others but leaves a person's caption alone.
    assert launch.main(["caption", str(out), "--mode", "overwrite", "--backend", "none",
                        "--set", f"caption.clip_tokenizer={clip}"]) == 0  # fmt: skip
    assert caption.read_text(encoding="utf-8") == "ohwx, woman, hand-written caption"

    # Back to the scores: the photo returns (random weights keep it) with a fresh caption.
    set_override(out, rejected, "status", None)
    assert launch.main(args) == 0
    assert records(out)[rejected]["decided_by"] == BY_RANDOM_WEIGHTS
    assert sorted(p.name for p in training_folder(out).glob("*.png")) == sorted(map(result_name, DONORS))
    assert (training_folder(out) / result_name(rejected)).with_suffix(".txt").read_text(encoding="utf-8").strip() == "ohwx, woman"


# --- the command ---


def test_command_prints_its_loopback_url_and_stops_cleanly_on_ctrl_c(run_copy):
    out, clip, _ = run_copy
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "DISPLAY": ""}
    proc = subprocess.Popen(
        [sys.executable, "launch.py", "review", str(out), "--set", f"caption.clip_tokenizer={clip}"],
        cwd=Path(launch.__file__).parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stdout:  # the URL comes before the server blocks
            seen.append(line)
            if "http://" in line:
                break
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", "".join(seen))
        assert url, seen
        assert any("no display here" in line for line in seen)  # no text browser taking the terminal
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=30)
        conn.request("GET", "/")
        page = conn.getresponse().read().decode()
        assert '<meta name="review-token" content="' in page and "{{TOKEN}}" not in page
        conn.close()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "review server stopped" in rest and "Traceback" not in rest


# --- the server's safety ---


def test_server_refuses_traversal_missing_token_and_bad_requests(run_copy, tmp_path):
    out, clip, _ = run_copy
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    (out / "samples").mkdir(exist_ok=True)
    (out / "samples" / "escape.txt").symlink_to(secret)
    with serving(out, clip) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.sock.getsockname()[0] == "127.0.0.1"
        ok, kind, body = request(server, "GET", "/files/manifest.jsonl")
        assert ok == 200 and b'"key"' in body
        for path, code in (
            ("/files/../secret.txt", 400),
            ("/files/%2e%2e/secret.txt", 400),
            ("/files/samples/%2e%2e/%2e%2e/secret.txt", 400),
            ("/files/%2Fetc%2Fpasswd", 400),
            ("/files/samples/escape.txt", 403),  # a symlink leading out of the run folder
            ("/files/nothing.png", 404),
            ("/thumb/nobody/result", 404),
            ("/thumb/x/../../manifest.jsonl", 404),
        ):
            status, kind, body = request(server, "GET", path)
            assert status == code, (path, status, body)
            assert kind.startswith("application/json") and "error" in json.loads(body), path
            assert b"not for the page" not in body and b"Traceback" not in body

        key = DONORS[0]
        for token in (None, "", "wrong"):
            status, _, body = request(server, "POST", "/api/status", {"key": key, "status": REJECTED}, token=token)
            assert status == 403 and "X-Review-Token" in json.loads(body)["error"]
        status, _, body = request(server, "POST", "/api/caption", {"key": key, "caption": "x"}, token=None)
        assert status == 403
        assert not (out / OVERRIDES).exists()  # nothing was written

        status, _, body = request(server, "GET", "/api/state", host="evil.example:80")
        assert status == 400 and "refused" in json.loads(body)["error"]
        for body_in, code, words in (
            (b"{not json", 400, "not JSON"),
            ([1, 2], 400, "JSON object"),
            ({"key": key, "status": "maybe"}, 400, "'status' must be"),
            ({"key": "nobody.jpg", "status": KEPT}, 404, "no photo 'nobody.jpg'"),
            ({"key": "no_face.png", "status": KEPT}, 409, "nothing to keep"),
        ):
            status, kind, body = request(server, "POST", "/api/status", body_in)
            assert status == code and words in json.loads(body)["error"], (body_in, status, body)
        status, _, body = request(server, "POST", "/api/caption", {"key": key, "caption": "  \n "})
        assert status == 400 and "cannot be empty" in json.loads(body)["error"]
        status, _, body = request(server, "POST", "/api/tokens", {"text": "ohwx, woman, a photo"})
        assert status == 200 and json.loads(body) == {"tokens": 6, "fits": 75, "budgets": [75, 150, 225]}
        status, _, body = request(server, "POST", "/api/tokens", {"text": " ".join(["word"] * 160)})
        assert json.loads(body)["fits"] == 225


def test_two_tabs_editing_at_once_lose_nothing(run_copy):
    out, clip, _ = run_copy
    with serving(out, clip) as server:
        jobs = [
            ("/api/status", {"key": DONORS[0], "status": REJECTED}),
            ("/api/caption", {"key": DONORS[0], "caption": "ohwx, woman, first tab"}),
            ("/api/caption", {"key": DONORS[1], "caption": "ohwx, woman, second tab"}),
            ("/api/status", {"key": DONORS[1], "status": KEPT}),
        ]
        results = [None] * len(jobs)

        def send(i: int) -> None:
            results[i] = request(server, "POST", *jobs[i])[0]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert results == [200] * len(jobs)
    saved = load_overrides(out)
    assert saved[DONORS[0]]["status"].value == REJECTED and saved[DONORS[0]]["caption"].value == "ohwx, woman, first tab"
    assert saved[DONORS[1]]["status"].value == KEPT and saved[DONORS[1]]["caption"].value == "ohwx, woman, second tab"
    assert saved[DONORS[0]]["status"].by == "tester"
    folder = training_folder(out)
    assert [p.name for p in folder.glob("*.png")] == [result_name(DONORS[1])]
    assert (folder / result_name(DONORS[1])).with_suffix(".txt").read_text(encoding="utf-8") == "ohwx, woman, second tab"


# --- the page in a real browser ---


def test_page_in_headless_chromium(run_copy):
    chromium_or_skip()
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    out, clip, _ = run_copy
    write_samples(out, {"base": 0.21, "ohwx-000001": 0.47, "ohwx": 0.39})
    rejected, edited = DONORS
    # A field a later stage adds to a record (per-face candidates) is shown as it is.
    choice = {"candidates": {"ghost+codeformer": 0.41, "ghost+gfpgan": 0.47}, "chosen": "ghost+gfpgan"}
    append_jsonl(out / "manifest.jsonl", {**records(out)[edited], "choice": choice})

    def wait(driver, condition, seconds=30):
        # A card is drawn again after each change: an element found a moment ago may be gone.
        return WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,)).until(condition)

    def card(driver, key):
        return driver.find_element(By.CSS_SELECTOR, f'article[data-key="{key}"]')

    def loaded(driver):
        wait(driver, lambda d: d.execute_script("return document.body.dataset.loaded === '1'"))

    with serving(out, clip) as server, chromium() as driver:
        driver.get(server.url)
        loaded(driver)
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
        assert len(cards) == 3
        # Every thumbnail of a photo with a result decodes (donor, result, both face close-ups).
        wait(driver, seconds=60, condition=lambda d: d.execute_script(
            "const imgs = [...document.querySelectorAll('article.card img')];"
            "return imgs.length === 2 * 4 + 1 && imgs.every(i => i.complete && i.naturalWidth > 0);"))  # fmt: skip
        assert "unusable" in card(driver, "no_face.png").text
        extra = card(driver, edited).find_element(By.CSS_SELECTOR, "details.extra")
        assert "choice" in extra.text and "0.470" in extra.text
        assert extra.find_element(By.CSS_SELECTOR, "tr.chosen").text.startswith("ghost+gfpgan (chosen)")
        story = driver.find_element(By.ID, "story").text
        assert "2 kept, 0 rejected, 1 unusable" in story

        card(driver, rejected).find_element(By.CSS_SELECTOR, "button.reject").click()
        wait(driver, lambda d: card(d, rejected).get_attribute("data-status") == REJECTED)

        area = card(driver, edited).find_element(By.CSS_SELECTOR, "textarea")
        area.send_keys(", smiling, long hair, outdoors")
        tokens = server.app.counter.count("ohwx, woman, smiling, long hair, outdoors")
        # counted live by the server, as it is typed
        wait(driver, lambda d: card(d, edited).find_element(By.CSS_SELECTOR, ".count").text.startswith(f"{tokens} / 75"))
        area.send_keys(Keys.CONTROL, Keys.ENTER)
        wait(driver, lambda d: "edited by tester" in card(d, edited).text)

        driver.refresh()
        loaded(driver)
        assert card(driver, rejected).get_attribute("data-status") == REJECTED
        assert "by tester" in card(driver, rejected).text
        value = card(driver, edited).find_element(By.CSS_SELECTOR, "textarea").get_attribute("value")
        assert value == "ohwx, woman, smiling, long hair, outdoors"
        assert "1 kept, 1 rejected, 1 unusable" in driver.find_element(By.ID, "story").text

        # Keyboard: focus moves with the arrows, k keeps.
        driver.find_element(By.TAG_NAME, "body").click()
        keys = driver.find_element(By.TAG_NAME, "body")
        order = [c.get_attribute("data-key") for c in driver.find_elements(By.CSS_SELECTOR, "article.card")]
        target = order.index(rejected)
        for _ in range(len(order)):
            keys.send_keys(Keys.ARROW_LEFT)
        for _ in range(target):
            keys.send_keys(Keys.ARROW_RIGHT)
        assert "focused" in card(driver, rejected).get_attribute("class")
        keys.send_keys("k")
        wait(driver, lambda d: card(d, rejected).get_attribute("data-status") == KEPT)
        keys.send_keys("r")
        wait(driver, lambda d: card(d, rejected).get_attribute("data-status") == REJECTED)

        driver.find_element(By.ID, "tab-samples").click()
        plot = driver.find_element(By.ID, "identity-plot")
        assert len(plot.find_elements(By.CSS_SELECTOR, "circle")) == 3
        assert len(plot.find_elements(By.CSS_SELECTOR, "circle.best")) == 1
        best = driver.find_element(By.CSS_SELECTOR, ".epoch.best")
        assert best.get_attribute("data-epoch") == "ohwx-000001"
        assert len(driver.find_elements(By.CSS_SELECTOR, ".epoch .row img")) == 6

    # The disk agrees with the page.
    folder = training_folder(out)
    assert [p.name for p in folder.glob("*.png")] == [result_name(edited)]
    caption = (folder / result_name(edited)).with_suffix(".txt").read_text(encoding="utf-8")
    assert caption == "ohwx, woman, smiling, long hair, outdoors"
    assert records(out)[rejected]["status"] == REJECTED
    assert load_overrides(out)[rejected]["status"].by == "tester"
