"""Trait pruning (the face's fixed traits left to the trigger) and the token budget with a
tagger's tags, counted with a real CLIP tokenizer."""

from __future__ import annotations

import pytest

from builder.caption.text import (
    CaptionRules,
    compose_caption,
    fit_caption,
    load_clip_counter,
    prune_tags,
    strip_words,
)
from builder.config import HAIR_WORDS, TRAIT_WORDS, Config
from tests.fixtures.clip import write_clip_tokenizer

TRAITS = list(TRAIT_WORDS)
SENTENCE = "a woman in a red coat standing on a wooden bridge over a river in an autumn forest"
TAGS = ("1girl", "solo", "outdoors", "coat", "bridge", "river", "tree", "autumn leaves", "scarf", "smile")


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    return load_clip_counter(str(write_clip_tokenizer(tmp_path_factory.mktemp("clip"))))


@pytest.mark.parametrize(
    ("sentence", "pruned"),
    [
        ("a woman with blue eyes and a red coat", "a woman with a red coat"),
        ("a woman with striking blue eyes, wearing a hat", "a woman, wearing a hat"),
        ("a woman with blue eyes smiling", "a woman smiling"),
        ("a woman with green eyes on a beach", "a woman on a beach"),
        ("a close up of a woman with freckles on her face", "a close up of a woman"),
        ("a woman with blue eyes", "a woman"),  # a lone fragment keeps what it has
        ("The woman has long brown hair and blue eyes. She is wearing a white shirt.",
         "The woman has long brown hair. She is wearing a white shirt."),
        ("She has blue eyes and freckles. She stands on a beach.", "She stands on a beach."),
        ("Her lips are slightly parted, and she smiles.", "She smiles."),
        ("a woman with a nose ring", "a woman with a ring"),  # a bare trait word inside a longer name
    ],
)
def test_trait_pruning_removes_whole_phrases_and_mends_the_sentence(sentence, pruned) -> None:
    assert strip_words(sentence, TRAITS) == pruned


def test_hair_is_pruned_only_when_not_described() -> None:
    cfg = Config()
    described = CaptionRules.from_config(cfg.caption)
    assert not set(HAIR_WORDS) & set(described.removed)
    cfg.caption.describe_hair = False
    cfg.caption.strip_words = ["anna smith"]
    rules = CaptionRules.from_config(cfg.caption)
    assert {"long hair", "blonde hair", "anna smith", "freckles"} <= set(rules.removed)
    text = "The image shows a young woman with blonde hair and blue eyes smiling at the camera."
    assert strip_words(text, described.removed) == "The image shows a young woman with blonde hair smiling at the camera."
    assert strip_words(text, rules.removed) == "The image shows a young woman smiling at the camera."
    text = "She is wearing a red coat and a black scarf, and she has long brown hair."
    assert strip_words(text, rules.removed) == "She is wearing a red coat and a black scarf."


def test_a_sentence_loses_its_full_stop_before_the_tags() -> None:
    rules = CaptionRules()
    assert compose_caption("ohwx", "woman", "She smiles. She waves.", rules, ["1girl"]) == (
        "ohwx, woman, She smiles. She waves, 1girl"
    )
    assert compose_caption("ohwx", "woman", "She smiles.", rules) == "ohwx, woman, She smiles."


def test_tags_with_a_trait_are_dropped_whole() -> None:
    tags = ["1girl", "blue_eyes", "light brown hair", "mole under eye", "lips", "freckles", "solo", "solo", "smile"]
    assert prune_tags(tags, TRAITS) == ["1girl", "light brown hair", "solo", "smile"]
    assert prune_tags(tags, [*TRAITS, *HAIR_WORDS]) == ["1girl", "solo", "smile"]


def test_fit_caption_prunes_traits_from_sentence_and_tags(counter) -> None:
    rules = CaptionRules(trait_words=tuple(TRAITS), strip_words=("anna",))
    out = fit_caption("ohwx", "woman", "anna, a woman with green eyes on a beach", rules, counter,
                      tags=("1girl", "green eyes", "freckles", "beach"))
    assert out == "ohwx, woman, a woman on a beach, 1girl, beach"


def test_budget_trims_tags_before_the_sentence(counter) -> None:
    rules = CaptionRules(max_tokens=40, extra_tags=("film grain",))
    full = compose_caption("ohwx", "woman", SENTENCE, rules, ["film grain", *TAGS])
    assert counter.count(full) > 40
    out = fit_caption("ohwx", "woman", SENTENCE, rules, counter, tags=TAGS)
    assert counter.count(out) <= 40
    head = f"ohwx, woman, {SENTENCE}, film grain, "
    assert out.startswith(head)  # the sentence and the user's tags whole
    kept = out.removeprefix(head).split(", ")
    assert 0 < len(kept) < len(TAGS) and tuple(kept) == TAGS[: len(kept)]  # the least confident went first
    # One more tag would not have fitted.
    assert counter.count(compose_caption("ohwx", "woman", SENTENCE, rules, ["film grain", *TAGS[: len(kept) + 1]])) > 40


def test_budget_cuts_the_sentence_only_once_the_tags_are_gone(counter) -> None:
    rules = CaptionRules(max_tokens=12, extra_tags=("film grain",))
    out = fit_caption("ohwx", "woman", SENTENCE, rules, counter, tags=TAGS)
    assert counter.count(out) <= 12
    assert out.startswith("ohwx, woman, a woman in") and out.endswith(", film grain")
    body = out.removeprefix("ohwx, woman, ").removesuffix(", film grain")
    assert SENTENCE.startswith(body) and body != SENTENCE  # only the sentence's first words: no tagger tag
