"""Caption text rules: composing trigger, class word, BLIP caption and tags; stripping
words; keeping every caption within the CLIP token budget kohya trains with.

kohya sd-scripts tokenizes each caption with the CLIP ViT-L/14 tokenizer and silently
cuts it at 75 tokens (150 or 225 with ``max_token_length``), so a caption is measured
here with that same tokenizer and shortened at a word boundary, BLIP's words first:
the trigger and class word are never cut.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.errors import BuilderError, ConfigError

PARTS = ("trigger", "class", "caption", "tags")
KOHYA_TOKEN_LENGTHS = (75, 150, 225)  # max_token_length values sd-scripts accepts (None means 75)
CLIP_VOCAB_SIZE = 49408

# A caption cut short should not end on a word that only announces more words.
DANGLING_WORDS = frozenset(
    ["a", "an", "the", "and", "or", "with", "of", "in", "on", "at", "to", "for", "by", "from", "into", "onto", "while", "wearing", "holding"]
)


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """CLIP tokens in ``text`` without the start and end tokens (what kohya's 75 counts)."""
        ...


class ClipTokenCounter:
    """Counts tokens with a transformers CLIPTokenizer (openai/clip-vit-large-patch14 files).

    The text is first cleaned with ftfy as sd-scripts' tokenizer does (transformers 4's
    CLIPTokenizer runs ``ftfy.fix_text`` when ftfy is installed, and sd-scripts pins it):
    curly quotes, ligatures and mojibake would otherwise count differently.
    """

    def __init__(self, tokenizer) -> None:
        import ftfy

        self.tokenizer = tokenizer
        self.fix_text = ftfy.fix_text

    def count(self, text: str) -> int:
        text = " ".join(self.fix_text(text).split())
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


@functools.lru_cache(maxsize=4)
def load_clip_counter(source: str, weights_dir: str = "") -> ClipTokenCounter:
    """The CLIP tokenizer from a local folder or the Hugging Face cache.

    The default repo id, when the hub cache lacks it, is built offline from CLIP's BPE
    file into the weights cache (``builder.caption.clip_tokenizer``): same ids, no download.
    Another repo id is fetched from the hub if online.
    """
    from transformers import CLIPTokenizer

    from builder.caption.clip_tokenizer import CLIP_REPO_ID, ensure_clip_tokenizer, hub_has
    from builder.caption.hub import from_pretrained

    if source == CLIP_REPO_ID and not Path(source).expanduser().is_dir() and not hub_has(source):
        source = str(ensure_clip_tokenizer(weights_dir))
    tokenizer = from_pretrained(
        CLIPTokenizer.from_pretrained,
        source,
        what="CLIP tokenizer (caption.clip_tokenizer)",
        fetch_hint=f"`huggingface-cli download {source}` on a machine with internet, or set "
        "[caption] clip_tokenizer to a folder holding vocab.json and merges.txt",
    )
    # transformers 5 returns an empty two-token tokenizer for a folder without vocab files.
    if len(tokenizer) < CLIP_VOCAB_SIZE:
        raise BuilderError(
            f"{source}: not a CLIP tokenizer ({len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}); "
            "caption.clip_tokenizer must hold openai/clip-vit-large-patch14's vocab.json and merges.txt"
        )
    return ClipTokenCounter(tokenizer)


@dataclass(frozen=True)
class CaptionRules:
    order: tuple[str, ...] = PARTS
    separator: str = ", "
    strip_words: tuple[str, ...] = ()
    extra_tags: tuple[str, ...] = ()
    max_tokens: int = 75

    def __post_init__(self) -> None:
        unknown = [p for p in self.order if p not in PARTS]
        if unknown or len(set(self.order)) != len(self.order):
            raise ConfigError(
                f"caption.order = {list(self.order)}: use each of {', '.join(PARTS)} at most once"
            )
        if not 1 <= self.max_tokens <= KOHYA_TOKEN_LENGTHS[-1]:
            raise ConfigError(
                f"caption.max_tokens = {self.max_tokens}: must be 1..{KOHYA_TOKEN_LENGTHS[-1]} "
                "(kohya cannot train on longer captions)"
            )

    @classmethod
    def from_config(cls, caption_cfg) -> CaptionRules:
        return cls(
            order=tuple(caption_cfg.order),
            separator=caption_cfg.separator,
            strip_words=tuple(caption_cfg.strip_words),
            extra_tags=tuple(caption_cfg.extra_tags),
            max_tokens=caption_cfg.max_tokens,
        )


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def tidy(text: str) -> str:
    """Collapse the spaces and punctuation that removing words leaves behind."""
    text = re.sub(r"\(\s*\)", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    return text.strip(" ,;:").strip()


def strip_words(text: str, words: Iterable[str]) -> str:
    """Remove each word or phrase (whole words, any case), longest first so phrases win."""
    for phrase in sorted((w for w in words if w.strip()), key=len, reverse=True):
        text = _phrase_pattern(phrase).sub(" ", text)
    return tidy(text)


def compose_caption(
    trigger: str, class_word: str, caption: str, rules: CaptionRules, tags: Sequence[str] | None = None
) -> str:
    """Join the parts in ``rules.order`` with ``rules.separator``, leaving out empty ones."""
    values = {
        "trigger": trigger.strip(),
        "class": class_word.strip(),
        "caption": caption.strip(),
        "tags": rules.separator.join(t.strip() for t in (rules.extra_tags if tags is None else tags) if t.strip()),
    }
    return rules.separator.join(values[p] for p in rules.order if values[p])


def _trim_words(words: list[str], keep: int) -> str:
    kept = words[:keep]
    while kept and kept[-1].strip(",.;:").lower() in DANGLING_WORDS:
        kept.pop()
    return tidy(" ".join(kept))


def fit_caption(
    trigger: str, class_word: str, caption: str, rules: CaptionRules, counter: TokenCounter
) -> str:
    """Strip words from ``caption``, compose, and shorten until it fits ``rules.max_tokens``.

    The caption's words go first (cut at a word boundary), then extra tags from the
    end; the trigger and class word are never cut.
    """
    body = strip_words(caption, rules.strip_words)
    text = compose_caption(trigger, class_word, body, rules)
    if counter.count(text) <= rules.max_tokens:
        return text
    words = body.split()
    lo, hi = 0, len(words)  # the longest prefix that fits, by bisection: counting is the slow part
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(compose_caption(trigger, class_word, _trim_words(words, mid), rules)) <= rules.max_tokens:
            lo = mid
        else:
            hi = mid - 1
    body = _trim_words(words, lo)
    tags = list(rules.extra_tags)
    text = compose_caption(trigger, class_word, body, rules, tags)
    while counter.count(text) > rules.max_tokens and tags:
        tags.pop()
        text = compose_caption(trigger, class_word, body, rules, tags)
    if counter.count(text) > rules.max_tokens:
        raise ConfigError(
            f"trigger '{trigger}' and class word '{class_word}' alone are {counter.count(text)} CLIP tokens, "
            f"over caption.max_tokens = {rules.max_tokens}"
        )
    return text


def remove_prefix(text: str, trigger: str, class_word: str, rules: CaptionRules) -> str:
    """The body of an existing caption without the trigger, class word and extra tags it already has.

    Running prefix-only twice must not add them twice, whatever order they were written in.
    """
    text = text.strip()
    if trigger:
        lead = r"^\s*" + re.escape(trigger) + r"(?!\w)[\s,;:]*"
        if class_word:
            lead += r"(?:" + r"\s+".join(map(re.escape, class_word.split())) + r"(?!\w)[\s,;:]*)?"
        text = re.sub(lead, "", text, flags=re.IGNORECASE)
    drop = {s.lower() for s in (trigger, class_word, f"{trigger} {class_word}", *rules.extra_tags) if s.strip()}
    return tidy(", ".join(s for s in (seg.strip() for seg in re.split(r"[,;]", text)) if s.lower() not in drop))


def required_max_token_length(
    captions: Iterable[str],
    counter: TokenCounter | None = None,
    clip_tokenizer: str = "openai/clip-vit-large-patch14",
    weights_dir: str = "",
) -> int | None:
    """kohya's ``max_token_length`` that trains every caption uncut: None (75), 150 or 225.

    Longer than 225 cannot be trained uncut; 225 is returned and kohya cuts the rest.
    """
    counter = counter or load_clip_counter(clip_tokenizer, weights_dir)
    longest = max((counter.count(c) for c in captions), default=0)
    for length in KOHYA_TOKEN_LENGTHS:
        if longest <= length:
            return None if length == KOHYA_TOKEN_LENGTHS[0] else length
    return KOHYA_TOKEN_LENGTHS[-1]
