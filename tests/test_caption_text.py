"""Caption text rules, counted with a real CLIP tokenizer (openai/clip-vit-large-patch14 files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.caption.text import (
    DANGLING_WORDS,
    CaptionRules,
    compose_caption,
    fit_caption,
    load_clip_counter,
    remove_prefix,
    required_max_token_length,
    strip_words,
)
from builder.config import Config
from builder.errors import BuilderError, ConfigError
from tests.fixtures.clip import write_clip_tokenizer

LONG = (
    "a woman with long brown hair standing on a wooden bridge over a river in a forest, wearing a red "
    "coat and a knitted scarf, holding a cup of coffee, looking at the camera with a gentle smile while "
    "autumn leaves fall around her and the morning light shines through the tall pine trees behind her"
)


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return load_clip_counter(str(write_clip_tokenizer(tmp_path_factory.mktemp("clip"))))


def test_counter_counts_clip_tokens_without_start_and_end(counter) -> None:
    assert counter.count("a photo of a cat") == 5
    assert counter.count("") == 0
    assert counter.count("ohwx, woman") == 3  # "ohwx" is one rare CLIP token: why it is a popular trigger


def test_folder_without_vocab_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "CLIPTokenizer"}')
    with pytest.raises(BuilderError, match="not a CLIP tokenizer"):
        load_clip_counter(str(tmp_path))


def test_strip_words_whole_words_any_case_and_tidy() -> None:
    text = "Anna Smith, a woman with long hair next to annabelle , smiling"
    out = strip_words(text, ["anna smith", "a woman with"])
    assert out == "long hair next to annabelle, smiling"
    assert strip_words("photo of ANNA (anna) smiling", ["anna"]) == "photo of smiling"
    assert strip_words("anna", ["anna"]) == ""


def test_compose_order_and_separator() -> None:
    rules = CaptionRules(extra_tags=("film grain", "bokeh"))
    assert compose_caption("ohwx", "woman", "a woman on a beach", rules) == (
        "ohwx, woman, a woman on a beach, film grain, bokeh"
    )
    rules = CaptionRules(order=("caption", "trigger", "class"), separator=" | ")
    assert compose_caption("ohwx", "", "a woman", rules) == "a woman | ohwx"
    with pytest.raises(ConfigError, match=r"caption\.order"):
        CaptionRules(order=("trigger", "trigger"))
    with pytest.raises(ConfigError, match="max_tokens"):
        CaptionRules(max_tokens=300)


def test_fit_caption_cuts_only_the_caption_at_a_word_boundary(counter) -> None:
    rules = CaptionRules(max_tokens=30, extra_tags=("bokeh",))
    assert counter.count(compose_caption("ohwx", "woman", LONG, rules)) > 30
    out = fit_caption("ohwx", "woman", LONG, rules, counter)
    assert counter.count(out) <= 30
    assert out.startswith("ohwx, woman, a woman with long brown hair")
    body = out.removeprefix("ohwx, woman, ").removesuffix(", bokeh")
    assert out.endswith(", bokeh")
    assert LONG.startswith(body)
    assert LONG[len(body)] in " ,"  # cut between words, not inside one
    # It keeps as much as fits: the next word that is not a dangling article or preposition would not fit.
    words = LONG.split()
    n = len(body.split())
    more = next(m for m in range(n + 1, len(words) + 1) if words[m - 1] not in DANGLING_WORDS)
    assert counter.count(compose_caption("ohwx", "woman", " ".join(words[:more]), rules)) > 30


def test_fit_caption_drops_tags_then_refuses(counter) -> None:
    rules = CaptionRules(max_tokens=8, extra_tags=("film grain", "bokeh", "high quality photograph"))
    out = fit_caption("ohwx", "woman", LONG, rules, counter)
    assert out.startswith("ohwx, woman")
    assert counter.count(out) <= 8
    with pytest.raises(ConfigError, match="alone are"):
        fit_caption("ohwx", "woman", LONG, CaptionRules(max_tokens=2), counter)


def test_fit_caption_leaves_short_captions_alone(counter) -> None:
    rules = CaptionRules.from_config(Config().caption)
    assert fit_caption("ohwx", "woman", "a woman on a beach", rules, counter) == "ohwx, woman, a woman on a beach"


def test_remove_prefix_is_idempotent(counter) -> None:
    rules = CaptionRules(extra_tags=("bokeh",))
    for old in ("a woman in a park", "ohwx, woman, a woman in a park, bokeh", "ohwx woman a woman in a park"):
        body = remove_prefix(old, "ohwx", "woman", rules)
        assert body == "a woman in a park"
        again = fit_caption("ohwx", "woman", body, rules, counter)
        assert again == "ohwx, woman, a woman in a park, bokeh"
        assert fit_caption("ohwx", "woman", remove_prefix(again, "ohwx", "woman", rules), rules, counter) == again


def test_required_max_token_length(counter) -> None:
    assert required_max_token_length(["ohwx, woman, a woman on a beach"], counter) is None
    assert 75 < counter.count(LONG + " " + LONG) <= 150
    assert required_max_token_length([LONG, LONG + " " + LONG], counter) == 150
    assert required_max_token_length([LONG, " ".join([LONG] * 3)], counter) == 225
    assert required_max_token_length([" ".join([LONG] * 5)], counter) == 225
    assert required_max_token_length([], counter) is None
