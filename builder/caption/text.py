"""Caption text rules: composing trigger, class word, sentence and tags; stripping words
and pruning the face's traits; keeping every caption within the CLIP token budget kohya
trains with.

kohya sd-scripts tokenizes each caption with the CLIP ViT-L/14 tokenizer and silently
cuts it at 75 tokens (150 or 225 with ``max_token_length``), so a caption is measured
here with that same tokenizer and shortened: a tagger's tags first (least confident
first), then the sentence at a word boundary, then the extra tags; the trigger and class
word are never cut.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.errors import BuilderError, ConfigError
from builder.weights import CLIP_REPO_ID

PARTS = ("trigger", "class", "caption", "tags")
KOHYA_TOKEN_LENGTHS = (75, 150, 225)  # max_token_length values sd-scripts accepts (None means 75)
CLIP_VOCAB_SIZE = 49408

# A caption cut short should not end on a word that only announces more words.
DANGLING_WORDS = frozenset(
    ["a", "an", "the", "and", "or", "with", "of", "in", "on", "at", "to", "for", "by", "from", "into", "onto", "while", "wearing", "holding"]
)
# Where a phrase was removed, the words around it that only made sense with it go too:
# "a woman with [striking blue eyes] and a red coat" -> "a woman with a red coat".
_MARK = "\x00"
_LEAD_WORDS = ("her", "his", "their", "its", "a", "an", "the", "very", "dark", "light", "bright", "deep", "pale",
               "big", "large", "small", "striking", "piercing", "beautiful", "long", "short", "thick", "thin")
_PREPOSITIONS = ("in", "on", "at", "to", "for", "by", "from", "into", "onto", "near", "under", "over", "behind",
                 "beside", "next", "against", "while", "wearing", "holding")
_TAIL_WORDS = (*DANGLING_WORDS, "has", "have", "had", "is", "are", "was", "were", "her", "his", "their", "its",
               "she", "he", "they", "it")
_EMPTY_SENTENCE = frozenset(
    ["she", "he", "they", "it", "her", "his", "their", "its", "a", "an", "the", "and", "with",
     "woman", "man", "person", "girl", "boy", "lady", "has", "is"]
)


def _alt(words: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(w) for w in words) + ")"


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

    from builder.caption.clip_tokenizer import ensure_clip_tokenizer, hub_has
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
    strip_words: tuple[str, ...] = ()  # the donor's name and the like; extra tags are never stripped
    extra_tags: tuple[str, ...] = ()
    max_tokens: int = 75
    trait_words: tuple[str, ...] = ()  # pruned from sentence and tags like strip_words (hair_words included when not described)
    token_limit: int = KOHYA_TOKEN_LENGTHS[-1]  # the most the text encoder reads (CLIP in kohya: 225; T5: 512)

    def __post_init__(self) -> None:
        unknown = [p for p in self.order if p not in PARTS]
        if unknown or len(set(self.order)) != len(self.order):
            raise ConfigError(
                f"caption.order = {list(self.order)}: use each of {', '.join(PARTS)} at most once"
            )
        if not 1 <= self.max_tokens <= self.token_limit:
            raise ConfigError(
                f"caption.max_tokens = {self.max_tokens}: must be 1..{self.token_limit} "
                "(kohya cannot train on longer captions)"
            )

    @classmethod
    def from_config(cls, caption_cfg, t5_tokens: int = 0) -> CaptionRules:
        """``t5_tokens``: the T5 budget (t5xxl_max_token_length) that replaces caption.max_tokens (CLIP's)."""
        hair = () if caption_cfg.describe_hair else tuple(caption_cfg.hair_words)
        if t5_tokens:
            return cls(
                order=tuple(caption_cfg.order), separator=caption_cfg.separator,
                strip_words=tuple(caption_cfg.strip_words), extra_tags=tuple(caption_cfg.extra_tags),
                max_tokens=t5_tokens, trait_words=(*caption_cfg.trait_words, *hair), token_limit=t5_tokens,
            )
        return cls(
            order=tuple(caption_cfg.order),
            separator=caption_cfg.separator,
            strip_words=tuple(caption_cfg.strip_words),
            extra_tags=tuple(caption_cfg.extra_tags),
            max_tokens=caption_cfg.max_tokens,
            trait_words=(*caption_cfg.trait_words, *hair),
        )

    @property
    def removed(self) -> tuple[str, ...]:
        """Everything that must not reach a caption: stripped words and pruned traits."""
        return (*self.strip_words, *self.trait_words)


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def tidy(text: str) -> str:
    """Collapse the spaces and punctuation that removing words leaves behind."""
    text = re.sub(r"\(\s*\)", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"[,;:]+\s*([.!?])", r"\1", text)
    return text.strip(" ,;:").strip()


def _mend(text: str, capitalised: bool) -> str:
    """Close the gaps that removed phrases (marked) leave in a sentence, then unmark them.

    The words before a removed phrase go with it only where the phrase ended a noun
    phrase (a clause end, a connector, a preposition or an -ing verb follows): "with a
    [nose] ring" keeps its "with a".
    """
    mark, lead, tail = re.escape(_MARK), _alt(_LEAD_WORDS), _alt(_TAIL_WORDS)
    connector = r"(?:and|or|with)"
    ends = rf"(?=\s*(?:[,.;:!?]|$|(?:{connector}|{_alt(_PREPOSITIONS)}|\w{{3,}}ing)(?!\w)))"
    subs = [
        (rf"\(\s*{mark}\s*\)", _MARK),  # "(anna)"
        (rf"{mark}(?:\s*(?:,|{connector})?\s*{mark})+", _MARK),  # "[blue eyes] and [freckles]"
        (rf"(?<!\w)(?:{lead}\s+)+{mark}{ends}", _MARK),  # "her bright [blue eyes]": the words leading into it
        (rf"{mark}\s+(?:is|are|was|were)(?!\w)[^,.;:!?]*", _MARK),  # "[lips] are parted": the clause is about it
        (rf"(?<!\w)({connector})\s+{mark}\s+{connector}(?!\w)", r"\1"),  # "with [blue eyes] and a coat"
        (rf"(?<!\w){connector}\s+{mark}{ends}", _MARK),  # "a woman with [blue eyes] smiling"
        (rf"(?:(?<!\w){tail}\s+)+{mark}(?=\s*(?:[,.;:!?]|$))", _MARK),  # "she has [blue eyes]."
        (rf"(^|[,.;:!?]\s*){mark}\s*,?\s*(?:{connector}(?!\w))?", r"\1"),  # "[blue eyes] and a coat"
    ]
    for pattern, repl in subs:
        text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if len(sentences) > 1:  # a sentence left with nothing to say goes; a lone fragment stays
        sentences = [s for s in sentences if _MARK not in s or not _empty_sentence(s)]
    sentences = [tidy(s.replace(_MARK, " ")) for s in sentences if re.search(r"\w", s)]
    if capitalised:
        sentences = [s[:1].upper() + s[1:] for s in sentences]
    return " ".join(s for s in sentences if s)


def _empty_sentence(sentence: str) -> bool:
    words = re.findall(r"[\w'-]+", sentence.lower())
    return all(w in _EMPTY_SENTENCE for w in words)


def strip_words(text: str, words: Iterable[str]) -> str:
    """Remove each word or phrase (whole words, any case), longest first so phrases win.

    The words that only led into a removed phrase go with it ("with", "her", "bright"),
    a clause whose subject it was goes too, and so does a sentence left with nothing to say.
    """
    # Florence writes capitalised sentences, BLIP lower-case fragments: keep the style.
    capitalised = text.lstrip()[:1].isupper() and bool(re.search(r"[.!?]\s*$", text))
    for phrase in sorted((w for w in words if w.strip()), key=len, reverse=True):
        text = _phrase_pattern(phrase).sub(_MARK, text)
    return tidy(_mend(text, capitalised)) if _MARK in text else tidy(text)


def prune_tags(tags: Iterable[str], words: Iterable[str]) -> list[str]:
    """The tags that contain none of ``words`` (whole words, any case; "_" counts as a space),
    each once, in order."""
    patterns = [_phrase_pattern(w) for w in words if w.strip()]
    out: list[str] = []
    for tag in (t.strip() for t in tags):
        plain = tag.replace("_", " ")
        if tag and tag not in out and not any(p.search(plain) for p in patterns):
            out.append(tag)
    return out


def compose_caption(
    trigger: str, class_word: str, caption: str, rules: CaptionRules, tags: Sequence[str] | None = None
) -> str:
    """Join the parts in ``rules.order`` with ``rules.separator``, leaving out empty ones."""
    values = {
        "trigger": trigger.strip(),
        "class": class_word.strip(),
        "caption": caption.strip(),  # a sentence's full stop goes where another part follows
        "tags": rules.separator.join(t.strip() for t in (rules.extra_tags if tags is None else tags) if t.strip()),
    }
    parts = [p for p in rules.order if values[p]]
    if "caption" in parts[:-1]:
        values["caption"] = values["caption"].removesuffix(".")
    return rules.separator.join(values[p] for p in parts)


def _trim_words(words: list[str], keep: int) -> str:
    kept = words[:keep]
    while kept and kept[-1].strip(",.;:").lower() in DANGLING_WORDS:
        kept.pop()
    return tidy(" ".join(kept))


def _longest_fit(n: int, fits: Callable[[int], bool]) -> int:
    """The largest k in 0..n with fits(k), fits being monotone; by bisection: counting is the slow part."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_caption(
    trigger: str,
    class_word: str,
    caption: str,
    rules: CaptionRules,
    counter: TokenCounter,
    tags: Sequence[str] = (),
) -> str:
    """Prune ``caption`` and the tagger's ``tags``, compose, and shorten until it fits ``rules.max_tokens``.

    The tagger's tags go first (from the end: they come most confident first), then the
    sentence's words (cut at a word boundary), then extra tags from the end; the trigger
    and class word are never cut.
    """
    body = strip_words(caption, rules.removed)
    extra = list(rules.extra_tags)
    model_tags = [t for t in prune_tags(tags, rules.removed) if t.lower() not in {e.lower() for e in extra}]

    def compose(body: str, n_model: int) -> str:
        return compose_caption(trigger, class_word, body, rules, extra + model_tags[:n_model])

    text = compose(body, len(model_tags))
    if counter.count(text) <= rules.max_tokens:
        return text
    n_model = _longest_fit(len(model_tags), lambda k: counter.count(compose(body, k)) <= rules.max_tokens)
    text = compose(body, n_model)
    if counter.count(text) <= rules.max_tokens:
        return text
    words = body.split()  # the sentence alone is too long: cut it
    keep = _longest_fit(len(words), lambda k: counter.count(compose(_trim_words(words, k), 0)) <= rules.max_tokens)
    body = _trim_words(words, keep)
    tags = list(extra)
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
    clip_tokenizer: str = CLIP_REPO_ID,
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
