"""PhotoMaker's trigger word: where the ID goes in the prompt.

``img`` is added to both SDXL tokenizers as a special token, so it stays one token. A
prompt holds it once, right after the class word ("a photo of a woman img"). The trigger
is removed and the class word's token is repeated ``num_id_images * num_tokens`` times
(V2: two ID tokens per input photo); those positions are the ``class_tokens_mask`` where
the ID encoder fuses its tokens in. For the first denoising steps (up to
``start_merge_step``) the prompt without the trigger is used instead, so the layout comes
from the text before the identity is imposed.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import BuilderError

TRIGGER = "img"


class TriggerError(BuilderError, ValueError):
    """A prompt without exactly one trigger right after a class word (a ValueError, as upstream raises)."""


def add_trigger(tokenizers: list, trigger: str = TRIGGER) -> None:
    for tokenizer in tokenizers:
        tokenizer.add_tokens([trigger], special_tokens=True)


@dataclass(frozen=True)
class ExpandedPrompt:
    input_ids: list[int]  # model_max_length ids: trigger removed, class token repeated, padded
    class_tokens_mask: list[bool]  # True at the repeated class-token positions


def expand_trigger(prompt: str, tokenizer, trigger: str, num_id_images: int, num_tokens: int = 2) -> ExpandedPrompt:
    """Token ids with the trigger replaced by ``num_id_images * num_tokens`` copies of the class token."""
    trigger_id = tokenizer.convert_tokens_to_ids(trigger)
    if trigger_id == tokenizer.unk_token_id:
        raise TriggerError(f"the trigger {trigger!r} is not a token of this tokenizer: call add_trigger first")
    max_len = tokenizer.model_max_length
    ids = tokenizer(prompt, padding="max_length", max_length=max_len, truncation=True).input_ids
    clean: list[int] = []
    class_index: list[int] = []
    for token in ids:
        if token == trigger_id:
            class_index.append(len(clean) - 1)
        else:
            clean.append(token)
    if len(class_index) != 1:
        found = "no" if not class_index else str(len(class_index))
        raise TriggerError(
            f"a PhotoMaker prompt needs the trigger word {trigger!r} exactly once, right after the class "
            f"word (e.g. 'a photo of a woman {trigger}'); found {found} (within the first {max_len} tokens) in: {prompt!r}"
        )
    index = class_index[0]
    if index < 1:  # right after the start token: no class word to repeat
        raise TriggerError(f"the trigger word {trigger!r} must follow the class word (e.g. 'woman {trigger}'), in: {prompt!r}")
    repeat = num_id_images * num_tokens
    clean = clean[:index] + [clean[index]] * repeat + clean[index + 1 :]
    clean = clean[:max_len] + [tokenizer.pad_token_id] * (max_len - len(clean))
    mask = [index <= i < index + repeat for i in range(max_len)]
    return ExpandedPrompt(clean, mask)


def text_only_prompt(prompt: str, tokenizer, trigger: str) -> str:
    """The prompt with the trigger token taken out, decoded back to text (as upstream does)."""
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    ids.remove(tokenizer.convert_tokens_to_ids(trigger))
    return tokenizer.decode(ids)
