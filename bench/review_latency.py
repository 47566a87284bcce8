"""How long a keep/reject takes on the review page, in the real browser, at 6 and 200 results.

Builds a small --random-weights run from the shared test photos, copies its records into a
6-result and a 200-result folder (the tests' fixture), serves each, and in headless Chromium
presses ``r`` / ``k`` on cards across the first page. Measured from the key press to (a) the
card showing its new status and (b) the image folder on disk having lost or regained the
result. Prints the medians and the 200 / 6 ratio: an edit should cost the same whatever the
folder's size, since it redraws one card and answers one card.

    .venv/bin/python -m bench.review_latency [--presses 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.conftest import DATA
from tests.fixtures.review import (
    EVERY_RESULT_TRAINS,
    build_random_run,
    chromium,
    many_results,
    serving,
)


def measure(out: Path, clip: Path, driver, presses: int) -> tuple[list[float], list[float]]:
    from selenium.webdriver.common.by import By

    (folder,) = (out / "img").iterdir()
    card_ms, disk_ms = [], []
    with serving(out, clip, *EVERY_RESULT_TRAINS) as server:
        driver.get(server.url + "?sort=key&desc=0")
        while driver.execute_script("return document.body.dataset.loaded !== '1'"):
            time.sleep(0.05)
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
        for i in range(presses):
            node = cards[i % len(cards)]
            key = node.get_attribute("data-key")
            want = "rejected" if node.get_attribute("data-status") == "kept" else "kept"
            png = next(p for p in (out / "results").iterdir() if p.stem == node.get_attribute("id").removeprefix("card-"))
            driver.execute_script("arguments[0].focus()", node)
            t0 = time.perf_counter()
            driver.switch_to.active_element.send_keys("r" if want == "rejected" else "k")
            card_done = disk_done = None
            while card_done is None or disk_done is None:
                now = time.perf_counter()
                if disk_done is None and (folder.joinpath(png.name).exists() == (want == "kept")):
                    disk_done = now
                if card_done is None and driver.execute_script(
                        f"return document.querySelector('article[data-key=\"{key}\"]').dataset.status") == want:
                    card_done = time.perf_counter()
                if now - t0 > 60:
                    raise SystemExit(f"{key}: no answer within 60 s")
            card_ms.append((card_done - t0) * 1000)
            disk_ms.append((disk_done - t0) * 1000)
            cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
    return card_ms, disk_ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presses", type=int, default=10)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="review-bench-"))
    (root / "small").mkdir()
    built, clip, _ = build_random_run(root / "small", DATA, DATA / "source" / "5-10.png")
    results = {}
    with chromium() as driver:
        for n in (6, 200):
            out = many_results(built, root / f"n{n}", clip, n)
            results[n] = measure(out, clip, driver, args.presses)
    for n, (card, disk) in results.items():
        print(f"{n:4d} results: key -> card {statistics.median(card):7.1f} ms, key -> disk {statistics.median(disk):7.1f} ms"
              f"  (median of {len(card)}; worst card {max(card):.1f} ms)")
    c6, c200 = (statistics.median(results[n][0]) for n in (6, 200))
    d6, d200 = (statistics.median(results[n][1]) for n in (6, 200))
    print(f"200 / 6 ratio: card {c200 / c6:.2f}x, disk {d200 / d6:.2f}x")


if __name__ == "__main__":
    main()
