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
import time
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
    EVERY_RESULT_TRAINS,
    build_random_run,
    chromium,
    chromium_or_skip,
    many_results,
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


def request(server, method: str, path: str, body=None, token: str | None = "page", host: str | None = None,
            headers: dict | None = None, full: bool = False):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/json", **(headers or {})}
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
    if full:
        return res.status, res.headers, payload
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


# --- the holes closed (issue: review page for 200 photos) ---


def caption_of(out: Path, key: str) -> Path:
    return (training_folder(out) / result_name(key)).with_suffix(".txt")


def test_limits_answer_4xx_json_not_500(run_copy):
    out, clip, _ = run_copy
    (out / "samples").mkdir(exist_ok=True)
    os.symlink("loop_b", out / "samples" / "loop_a")
    os.symlink("loop_a", out / "samples" / "loop_b")
    with serving(out, clip) as server:
        status, kind, body = request(server, "GET", "/files/samples/loop_a")
        assert status == 400 and kind.startswith("application/json") and "loop_a" in json.loads(body)["error"]
        deep = b"[" * 100_000 + b"]" * 100_000  # under the size cap, far deeper than the parser goes
        status, _, body = request(server, "POST", "/api/status", deep)
        assert status == 400 and "not JSON" in json.loads(body)["error"]
        status, _, body = request(server, "POST", "/api/caption", b'{"key": ' + b"[" * 60_000 + b"]" * 60_000 + b"}")
        assert status == 400 and "nested" in json.loads(body)["error"]
        # A body over the cap is refused before it is read, by its length or as it streams in.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.putrequest("POST", "/api/status")
        conn.putheader("Content-Length", "300000000")  # 300 MB announced: answered before any is sent
        conn.endheaders()
        res = conn.getresponse()
        assert res.status == 413 and "KiB" in json.loads(res.read())["error"]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/api/status", body=iter([b"{" * 65536] * 5), headers={"X-Review-Token": server.app.token},
                     encode_chunked=True)  # fmt: skip
        res = conn.getresponse()
        assert res.status == 413 and "KiB" in json.loads(res.read())["error"]
        conn.close()
    assert not (out / OVERRIDES).exists()


def test_port_out_of_range_is_a_usage_error(capsys):
    for port in ("99999", "-5", "http"):
        with pytest.raises(SystemExit) as exc:
            launch.make_parser().parse_args(["review", "somewhere", "--port", port])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--port" in err and "Traceback" not in err


def test_captions_are_cleaned_one_line_and_warned_without_the_trigger(run_copy):
    out, clip, _ = run_copy
    key = DONORS[0]
    with serving(out, clip) as server:
        status, _, body = request(server, "POST", "/api/caption", {"key": key, "caption": "ohwx,\x00 woman\x07, \u202esmiling\u200b"})
        assert status == 200, body
        assert caption_of(out, key).read_text(encoding="utf-8") == "ohwx, woman, smiling"
        assert json.loads(body)["card"]["warnings"] == []
        status, _, body = request(server, "POST", "/api/caption", {"key": key, "caption": "ohwx, woman\nsecond line"})
        assert status == 400 and "one line" in json.loads(body)["error"]
        assert caption_of(out, key).read_text(encoding="utf-8") == "ohwx, woman, smiling"  # unchanged
        status, _, body = request(server, "POST", "/api/caption", {"key": key, "caption": "a woman smiling"})
        assert status == 200  # a person's choice, saved, and said so on the card
        assert any("no trigger word 'ohwx'" in w for w in json.loads(body)["card"]["warnings"])
        state = json.loads(request(server, "GET", "/api/state")[2])
        (card,) = [c for c in state["cards"] if c["key"] == key]
        assert any("no trigger word" in w for w in card["warnings"])


def test_page_and_files_cannot_be_framed_or_run_as_the_page(run_copy):
    out, clip, _ = run_copy
    (out / "samples").mkdir(exist_ok=True)
    (out / "samples" / "evil.html").write_text("<script>fetch('/api/status')</script>")
    (out / "samples" / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    with serving(out, clip) as server:
        for path in ("/", "/api/state", "/static/review.js", "/files/manifest.jsonl", "/files/nothing.png"):
            status, headers, _ = request(server, "GET", path, full=True)
            assert headers["X-Frame-Options"] == "DENY", path
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
            assert headers["X-Content-Type-Options"] == "nosniff", path
        _, headers, page = request(server, "GET", "/", full=True)
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert b"<script>" not in page.replace(b'<script src="/static/review.js"></script>', b"")  # no inline script
        status, headers, _ = request(server, "GET", "/files/samples/evil.html", full=True)
        assert status == 200 and not headers["Content-Type"].startswith("text/html"), headers["Content-Type"]
        assert "attachment" in headers.get("Content-Disposition", "")
        assert "sandbox" in headers["Content-Security-Policy"]
        # An SVG stays an image (the epoch plot is one), its scripts forbidden when opened on its own.
        status, headers, _ = request(server, "GET", "/files/samples/evil.svg", full=True)
        assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
        csp = headers["Content-Security-Policy"]
        assert "sandbox" in csp and "default-src 'none'" in csp and "script-src" not in csp
        status, headers, body = request(server, "GET", f"/files/{(out / 'results').iterdir().__next__().relative_to(out)}", full=True)
        assert status == 200 and headers["Content-Type"] == "image/png" and body[:4] == b"\x89PNG"


def test_posts_from_another_origin_are_refused_even_with_the_token(run_copy):
    out, clip, _ = run_copy
    with serving(out, clip) as server:
        for origin in ("http://evil.example", "null", f"http://localhost:{server.port + 1}"):
            status, _, body = request(server, "POST", "/api/status", {"key": DONORS[0], "status": REJECTED}, headers={"Origin": origin})
            assert status == 403 and "Origin" in json.loads(body)["error"], origin
        assert not (out / OVERRIDES).exists()
        status, _, _ = request(server, "POST", "/api/status", {"key": DONORS[0], "status": REJECTED},
                               headers={"Origin": f"http://127.0.0.1:{server.port}"})  # fmt: skip
        assert status == 200


def test_captions_come_back_with_their_result_and_revert_to_the_captioners(run_copy):
    out, clip, _ = run_copy
    key = DONORS[0]
    original = caption_of(out, key).read_text(encoding="utf-8")
    with serving(out, clip) as server:
        status, _, body = request(server, "POST", "/api/status", {"key": key, "status": REJECTED})
        answer = json.loads(body)
        assert [c["key"] for c in answer["cards"]] == [key]  # an edit answers with its own card only
        assert not caption_of(out, key).exists() and answer["card"]["caption"] == original  # kept aside, shown
        request(server, "POST", "/api/status", {"key": key, "status": KEPT})
        assert caption_of(out, key).read_text(encoding="utf-8") == original
        request(server, "POST", "/api/caption", {"key": key, "caption": "ohwx, woman, by hand"})
        for status_now in (REJECTED, None):  # out and back in: the person's caption stays the person's
            request(server, "POST", "/api/status", {"key": key, "status": status_now})
        assert caption_of(out, key).read_text(encoding="utf-8") == "ohwx, woman, by hand"
        state = json.loads(request(server, "GET", "/api/state")[2])
        (card,) = [c for c in state["cards"] if c["key"] == key]
        assert card["captioner_caption"] == original and card["caption_override"]["value"] == "ohwx, woman, by hand"
        status, _, body = request(server, "POST", "/api/caption", {"key": key, "caption": None})  # revert caption
        assert status == 200 and json.loads(body)["card"]["caption"] == original
    assert caption_of(out, key).read_text(encoding="utf-8") == original
    assert "caption" not in load_overrides(out).get(key, {})
    assert not any((out / "caption_store").iterdir())  # nothing left aside once all is back


def test_bulk_edit_and_thumbnails_made_ahead_without_the_manifest(run_copy):
    out, clip, _ = run_copy
    with serving(out, clip) as server:
        status, _, body = request(server, "POST", "/api/status", {"keys": list(DONORS), "status": REJECTED})
        assert status == 200 and sorted(c["key"] for c in json.loads(body)["cards"]) == sorted(DONORS)
        assert all(load_overrides(out)[k]["status"].value == REJECTED for k in DONORS)
        assert "TOMLs were not updated" in json.loads(body)["warning"]  # nothing left to train on: said on the page
        assert "TOMLs were not updated" in json.loads(request(server, "GET", "/api/state")[2])["toml_warning"]
        status, _, body = request(server, "POST", "/api/status", {"keys": [DONORS[0], "no_face.png"], "status": KEPT})
        assert status == 409 and load_overrides(out)[DONORS[0]]["status"].value == REJECTED  # all or nothing
        cache = out / "review_cache"
        deadline = time.monotonic() + 120  # made in the background, no page asked for them
        while len(list(cache.glob("*.jpg"))) < 2 * 4 + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(cache.glob("*.jpg"))) == 2 * 4 + 1  # and the donor of the photo without a face
        (out / "manifest.jsonl").rename(out / "manifest.moved")
        cid = Path(result_name(DONORS[0])).stem
        for kind in ("result", "donor_face", "result_full", "donor_full"):
            status, kind_type, body = request(server, "GET", f"/thumb/{cid}/{kind}")
            assert status == 200 and kind_type.startswith("image/"), (kind, body[:200])


# --- the page in a real browser (one Chromium for the module) ---


@pytest.fixture(scope="module")
def browser():
    chromium_or_skip()
    with chromium() as driver:
        yield driver


def wait(driver, condition, seconds=60):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A card is drawn again after each change: an element found a moment ago may be gone.
    return WebDriverWait(driver, seconds, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def card(driver, key):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'article[data-key="{key}"]')


def loaded(driver):
    wait(driver, lambda d: d.execute_script("return document.body.dataset.loaded === '1'"))


def focus(driver, key):
    """Focus a card as Tab or a click would (a click lands wherever the card's middle is)."""
    driver.execute_script("arguments[0].focus()", card(driver, key))


def open_page(driver, url):
    driver.get(url)
    loaded(driver)


def test_page_in_headless_chromium(run_copy, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    out, clip, _ = run_copy
    write_samples(out, {"base": 0.21, "ohwx-000001": 0.47, "ohwx": 0.39})
    rejected, edited = DONORS
    # A field a later stage adds to a record (per-face candidates) is shown as it is.
    choice = {"candidates": {"ghost+codeformer": 0.41, "ghost+gfpgan": 0.47}, "chosen": "ghost+gfpgan"}
    append_jsonl(out / "manifest.jsonl", {**records(out)[edited], "choice": choice})

    with serving(out, clip) as server:
        open_page(driver, server.url)
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
        assert len(cards) == 3
        # Every thumbnail of a photo with a result decodes (donor, result, both face close-ups).
        wait(driver, lambda d: d.execute_script(
            "const imgs = [...document.querySelectorAll('article.card img')];"
            "return imgs.length === 2 * 4 + 1 && imgs.every(i => i.complete && i.naturalWidth > 0);"))  # fmt: skip
        assert "unusable" in card(driver, "no_face.png").text
        extra = card(driver, edited).find_element(By.CSS_SELECTOR, "details.extra")
        assert "choice" in extra.text and "0.470" in extra.text
        assert extra.find_element(By.CSS_SELECTOR, "tr.chosen").text.startswith("ghost+gfpgan (chosen)")
        assert "2 kept, 0 rejected, 1 unusable" in driver.find_element(By.ID, "story").text

        card(driver, rejected).find_element(By.CSS_SELECTOR, "button.reject").click()
        wait(driver, lambda d: card(d, rejected).get_attribute("data-status") == REJECTED)

        area = card(driver, edited).find_element(By.CSS_SELECTOR, "textarea")
        area.send_keys(", smiling, long hair, outdoors")
        tokens = server.app.counter.count("ohwx, woman, smiling, long hair, outdoors")
        # counted live by the server, as it is typed
        wait(driver, lambda d: card(d, edited).find_element(By.CSS_SELECTOR, ".count").text.startswith(f"{tokens} / 75"))
        area.send_keys(Keys.CONTROL, Keys.ENTER)
        wait(driver, lambda d: "edited by tester" in card(d, edited).text)
        assert "revert caption" in card(driver, edited).text

        driver.refresh()
        loaded(driver)
        assert card(driver, rejected).get_attribute("data-status") == REJECTED
        assert "by tester" in card(driver, rejected).text
        value = card(driver, edited).find_element(By.CSS_SELECTOR, "textarea").get_attribute("value")
        assert value == "ohwx, woman, smiling, long hair, outdoors"
        assert "1 kept, 1 rejected, 1 unusable" in driver.find_element(By.ID, "story").text

        # Keyboard: focus moves with the arrows, k keeps.
        keys = driver.find_element(By.TAG_NAME, "body")
        order = [c.get_attribute("data-key") for c in driver.find_elements(By.CSS_SELECTOR, "article.card")]
        focus(driver, order[0])
        for _ in range(order.index(rejected)):
            driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
        assert "focused" in card(driver, rejected).get_attribute("class")
        driver.switch_to.active_element.send_keys("k")
        wait(driver, lambda d: card(d, rejected).get_attribute("data-status") == KEPT)
        driver.switch_to.active_element.send_keys("r")
        wait(driver, lambda d: card(d, rejected).get_attribute("data-status") == REJECTED)

        driver.find_element(By.ID, "tab-samples").click()
        plot = driver.find_element(By.ID, "identity-plot")
        assert len(plot.find_elements(By.CSS_SELECTOR, "circle")) == 3
        assert len(plot.find_elements(By.CSS_SELECTOR, "circle.best")) == 1
        best = driver.find_element(By.CSS_SELECTOR, ".epoch.best")
        assert best.get_attribute("data-epoch") == "ohwx-000001"
        assert len(driver.find_elements(By.CSS_SELECTOR, ".epoch .row img")) == 6
        assert keys  # the page kept its body through it all

    # The disk agrees with the page.
    folder = training_folder(out)
    assert [p.name for p in folder.glob("*.png")] == [result_name(edited)]
    caption = (folder / result_name(edited)).with_suffix(".txt").read_text(encoding="utf-8")
    assert caption == "ohwx, woman, smiling, long hair, outdoors"
    assert records(out)[rejected]["status"] == REJECTED
    assert load_overrides(out)[rejected]["status"].by == "tester"


def test_page_never_loses_a_caption_or_typed_text(run_copy, browser):
    """Items 1, 2 and 4: out and back with u or k keeps the caption file; text typed and not
    saved survives other cards' edits, the README's own keys (e, type, Esc, k) and a reload."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    out, clip, _ = run_copy
    a, b = DONORS
    original = caption_of(out, b).read_text(encoding="utf-8")
    with serving(out, clip) as server:
        open_page(driver, server.url)
        # 4: k on a result that is already kept (its Keep button disabled) writes nothing.
        focus(driver, b)
        driver.switch_to.active_element.send_keys("k")
        assert "already kept" in driver.find_element(By.ID, "message").text
        # 1: reject, then u: the caption file comes back with the PNG; then reject and k.
        for back in ("u", "k"):
            card(driver, b).find_element(By.CSS_SELECTOR, "button.reject").click()
            wait(driver, lambda d: card(d, b).get_attribute("data-status") == REJECTED)
            assert not caption_of(out, b).exists()
            focus(driver, b)
            driver.switch_to.active_element.send_keys(back)
            wait(driver, lambda d: card(d, b).get_attribute("data-status") == KEPT)
            wait(driver, lambda d: "no caption file" not in card(d, b).text)
            assert caption_of(out, b).read_text(encoding="utf-8") == original
        # 2: a draft in one card survives an edit of another card...
        card(driver, a).find_element(By.CSS_SELECTOR, "textarea").send_keys(", draft in a")
        card(driver, b).find_element(By.CSS_SELECTOR, "button.reject").click()
        wait(driver, lambda d: card(d, b).get_attribute("data-status") == REJECTED)
        assert card(driver, a).find_element(By.CSS_SELECTOR, "textarea").get_attribute("value") == original + ", draft in a"
        # ... and the README's keys on its own card: e, type, Esc, r.
        focus(driver, b)
        driver.switch_to.active_element.send_keys("e")
        driver.switch_to.active_element.send_keys(", draft in b")
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        driver.switch_to.active_element.send_keys("u")
        wait(driver, lambda d: card(d, b).get_attribute("data-status") == KEPT)
        assert card(driver, b).find_element(By.CSS_SELECTOR, "textarea").get_attribute("value") == original + ", draft in b"
        assert "unsaved" in card(driver, b).text
        assert driver.execute_script(
            "const e = new Event('beforeunload', {cancelable: true}); window.dispatchEvent(e); return e.defaultPrevented;")
        driver.execute_script("window.onbeforeunload = null;")
        driver.get(server.url)  # a reload: the drafts come back (this tab's sessionStorage)
        loaded(driver)
        assert card(driver, a).find_element(By.CSS_SELECTOR, "textarea").get_attribute("value") == original + ", draft in a"
        assert card(driver, b).find_element(By.CSS_SELECTOR, "textarea").get_attribute("value") == original + ", draft in b"
        assert caption_of(out, a).read_text(encoding="utf-8") == original  # nothing saved that was not asked for
    overrides = load_overrides(out)
    assert a not in overrides  # never touched: k on a kept card wrote nothing
    assert "status" not in overrides.get(b, {})  # the last u went back to the scores


@pytest.fixture(scope="module")
def run200(built, tmp_path_factory):
    out, clip, _ = built
    return many_results(out, tmp_path_factory.mktemp("review200"), clip, 200), clip


def test_page_for_200_results(run200, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    src, clip = run200
    out = tmp_path / "run"
    shutil.copytree(src, out, symlinks=True)
    with serving(out, clip, *EVERY_RESULT_TRAINS) as server:
        open_page(driver, server.url + "?sort=key&desc=0")
        keys = [c.get_attribute("data-key") for c in driver.find_elements(By.CSS_SELECTOR, "article.card")]
        assert keys[:11] == [f"photo{i}.jpeg" for i in range(1, 12)] and len(keys) == 48  # natural order, one page
        assert driver.execute_script("return [...document.querySelectorAll('article.card img')].every(i => i.loading === 'lazy')")
        assert driver.execute_script("return [...document.querySelectorAll('article.card')].every(c => c.tabIndex === 0)")
        assert "Reviewed" in driver.find_element(By.ID, "progress").text and "of 200" in driver.find_element(By.ID, "progress").text
        # Keys in the grid's layout: down goes one row down, End to the last card (on the last page).
        focus(driver, "photo1.jpeg")
        columns = driver.execute_script(
            "const c = [...document.querySelectorAll('article.card')]; return c.filter(n => n.offsetTop === c[0].offsetTop).length;")
        driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
        assert driver.switch_to.active_element.get_attribute("data-key") == f"photo{columns + 1}.jpeg"
        driver.switch_to.active_element.send_keys(Keys.END)
        assert driver.switch_to.active_element.get_attribute("data-key") == "photo200.jpeg"
        assert "page 5 of 5" in driver.find_element(By.ID, "page-info").text
        driver.switch_to.active_element.send_keys(Keys.HOME)
        assert driver.switch_to.active_element.get_attribute("data-key") == "photo1.jpeg"
        # The full-size view: the real pixels, zoom and the donor/result toggle.
        driver.switch_to.active_element.send_keys("z")
        assert driver.find_element(By.ID, "viewer").is_displayed()
        wait(driver, lambda d: d.execute_script("const i = document.getElementById('viewer-result'); return i.complete && i.naturalWidth > 640;"))
        assert not driver.find_element(By.ID, "viewer-donor").is_displayed()
        driver.switch_to.active_element.send_keys(Keys.SPACE)
        assert driver.find_element(By.ID, "viewer-donor").is_displayed()
        driver.switch_to.active_element.send_keys("+")
        assert "150%" in driver.find_element(By.ID, "zoom-level").text
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        assert not driver.find_element(By.ID, "viewer").is_displayed()
        # Everything with one reason, rejected in one step; the filters stay in the URL.
        reason = driver.execute_script("return document.querySelector('#filter-reason option:nth-child(2)').value")
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "filter-reason")).select_by_value(reason)
        shown = int(driver.find_element(By.ID, "shown").text.split()[0])
        assert 0 < shown <= 200
        driver.find_element(By.ID, "select-shown").click()
        assert driver.find_element(By.ID, "selected").text == f"{shown} selected"
        driver.find_element(By.ID, "bulk-reject").click()
        wait(driver, lambda d: f"Reviewed {shown} of 200 ({shown} decided by a person)" in d.find_element(By.ID, "progress").text or
             d.find_element(By.ID, "progress").text.endswith(f"({shown} decided by a person)"))  # fmt: skip
        assert "reason=" in driver.current_url
        driver.refresh()
        loaded(driver)
        assert driver.find_element(By.ID, "filter-reason").get_attribute("value") == reason
        assert driver.find_element(By.ID, "sort").get_attribute("value") == "key"
        assert all(c.get_attribute("data-status") == REJECTED for c in driver.find_elements(By.CSS_SELECTOR, "article.card"))
    overrides = load_overrides(out)
    assert sum(o["status"].value == REJECTED for o in overrides.values()) == shown
    assert len(list(training_folder(out).glob("*.png"))) == 200 - shown
    assert len(list(training_folder(out).glob("*.txt"))) == 200 - shown
    assert len(list((out / "caption_store").glob("*.txt"))) == shown  # their captions wait for them
