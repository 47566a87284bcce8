"""What counting a FLUX caption's budget in T5 tokens costs the caption stage, against CLIP's count.

``fit_caption`` counts a caption several times while it shortens it; FLUX captions are
Florence-2 detailed captions (60-120 words) budgeted in T5 tokens (builder.caption.t5_tokenizer),
SD ones in CLIP tokens. This times both counters on the same captions, one pass each, and prints
microseconds per count and the ratio. The T5 tokenizer is T5 v1.1's from an sd-scripts checkout
(``configs/t5_old``); without one, the small test tokenizer (tests/fixtures/t5.py).

    .venv/bin/python -m bench.t5_token_count [--sd-scripts ~/sd-scripts] [--captions 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from builder.caption.t5_tokenizer import SD_SCRIPTS_T5, T5TokenCounter, load_t5_tokenizer
from builder.caption.text import ClipTokenCounter

DESCRIPTION = ("The image shows a woman with long brown hair standing in a sunlit park. She is wearing a light "
         "blue denim jacket over a white t-shirt and smiling at the camera, with trees and a path behind her, "
         "soft shadows on the grass, a bench to the left and a few people walking in the distance.")
WORDS = DESCRIPTION.split()


def captions(n: int) -> list[str]:
    """``n`` trigger-first detailed captions of 40-120 words, each a little different."""
    return [f"ohwx woman, {' '.join((WORDS * 3)[i % 7 : i % 7 + 40 + (i * 13) % 80])}" for i in range(n)]


def per_count(counter, texts: list[str]) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    counter.count(texts[0])  # warm: the first call builds caches
    start = time.perf_counter()
    total = sum(counter.count(t) for t in texts)
    return (time.perf_counter() - start) / len(texts), total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sd-scripts", type=Path, default=None)
    ap.add_argument("--captions", type=int, default=400)
    args = ap.parse_args()
    from transformers import CLIPTokenizer

    from tests.fixtures.clip import write_clip_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        real = args.sd_scripts is not None and (args.sd_scripts / SD_SCRIPTS_T5).is_dir()
        if real:
            t5_folder = args.sd_scripts / SD_SCRIPTS_T5
        else:
            from tests.fixtures.t5 import write_t5_tokenizer

            t5_folder = write_t5_tokenizer(Path(tmp) / "t5")
        t5 = T5TokenCounter(load_t5_tokenizer(t5_folder))
        clip = ClipTokenCounter(CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(Path(tmp) / "clip"))))
        texts = captions(args.captions)
        t5_s, t5_tokens = per_count(t5, texts)
        clip_s, clip_tokens = per_count(clip, texts)
    print(f"T5 tokenizer: {'T5 v1.1 (sd-scripts ' + str(SD_SCRIPTS_T5) + ')' if real else 'the small test one'}")
    print(f"{len(texts)} captions, {t5_tokens / len(texts):.0f} T5 / {clip_tokens / len(texts):.0f} CLIP tokens each")
    print(f"T5 count:   {t5_s * 1e6:8.1f} us per caption")
    print(f"CLIP count: {clip_s * 1e6:8.1f} us per caption")
    print(f"ratio T5 / CLIP: {t5_s / clip_s:.2f}")


if __name__ == "__main__":
    main()
