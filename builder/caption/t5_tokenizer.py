"""T5 v1.1's tokenizer (google/t5-v1_1-xxl), which FLUX.1 and Chroma read captions with.

sd-scripts' FluxTokenizeStrategy loads ``T5TokenizerFast`` from ``google/t5-v1_1-xxl`` and keeps a
copy in ``tokenizer_cache_dir/google_t5-v1_1-xxl``. The same tokenizer is found here, in order:

1. that copy in the weights cache's tokenizer_cache_dir (made once by step 2-4);
2. the Hugging Face cache, if the repo's tokenizer files are there;
3. the sd-scripts checkout's ``configs/t5_old`` (``spiece.model`` + ``tokenizer.json``: the T5
   SentencePiece model that ships with sd-scripts since its Anima support; the same vocabulary);
4. a download of the repo's tokenizer files (``T5_FILES``) through huggingface_hub.

No PyPI package ships T5's ``spiece.model``; with none of these the caption budget cannot be counted.
"""

from __future__ import annotations

import functools
from pathlib import Path

from builder.caption.clip_tokenizer import tokenizer_cache_root
from builder.errors import BuilderError
from builder.io import atomic_folder

T5_REPO_ID = "google/t5-v1_1-xxl"  # strategy_flux.T5_XXL_TOKENIZER_ID
T5_CACHE_NAME = T5_REPO_ID.replace("/", "_")  # sd-scripts: model_id.replace("/", "_")
T5_FILES = ("spiece.model", "special_tokens_map.json", "tokenizer_config.json")
SD_SCRIPTS_T5 = Path("configs") / "t5_old"


class T5TokenCounter:
    """Tokens T5 reads for a caption, its closing </s> included (t5xxl_max_token_length counts it)."""

    def __init__(self, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer(" ".join(text.split()), verbose=False)["input_ids"])


def _is_t5_folder(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def _hub_folder() -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(T5_REPO_ID, f) for f in T5_FILES]
    return Path(found[0]).parent if all(isinstance(f, str) for f in found) else None


def _download() -> Path:
    from huggingface_hub import hf_hub_download

    try:
        paths = [hf_hub_download(T5_REPO_ID, f) for f in T5_FILES]
    except Exception as exc:  # the hub raises many types (offline, HTTP, not found)
        raise BuilderError(
            f"T5 tokenizer {T5_REPO_ID}: cannot download {', '.join(T5_FILES)} ({type(exc).__name__}); "
            f"set paths.sd_scripts to an sd-scripts checkout (its {SD_SCRIPTS_T5} holds it), or run "
            f"`huggingface-cli download {T5_REPO_ID} {' '.join(T5_FILES)}` on a machine with internet"
        ) from None
    return Path(paths[0]).parent


def t5_source(sd_scripts: str = "", download: bool = True) -> Path:
    """A folder T5TokenizerFast loads T5 v1.1's tokenizer from (steps 2-4 of the module doc)."""
    hub = _hub_folder()
    if hub is not None:
        return hub
    if sd_scripts:
        bundled = Path(sd_scripts).expanduser() / SD_SCRIPTS_T5
        if _is_t5_folder(bundled):
            return bundled
    from builder.caption.hub import hub_offline

    if not download or hub_offline():
        raise BuilderError(
            f"T5 tokenizer {T5_REPO_ID} is not cached here and downloads are off; set paths.sd_scripts to an "
            f"sd-scripts checkout (its {SD_SCRIPTS_T5} holds it)"
        )
    return _download()


def load_t5_tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast.from_pretrained(str(folder))
    # T5's own markers: a CLIP or other tokenizer folder put here by mistake has neither.
    if tokenizer.eos_token != "</s>" or "<extra_id_0>" not in tokenizer.get_vocab():
        raise BuilderError(f"{folder}: not a T5 tokenizer (no </s> and <extra_id_*> tokens); expected {T5_REPO_ID}'s")
    return tokenizer


def ensure_t5_tokenizer(weights_dir: str = "", sd_scripts: str = "") -> Path:
    """sd-scripts' copy in the default tokenizer_cache_dir, made once from ``t5_source``."""
    folder = tokenizer_cache_root(weights_dir) / T5_CACHE_NAME
    if _is_t5_folder(folder):
        return folder
    tokenizer = load_t5_tokenizer(t5_source(sd_scripts))
    with atomic_folder(folder, "T5 tokenizer") as tmp:
        tokenizer.save_pretrained(str(tmp))
    return folder


@functools.lru_cache(maxsize=4)
def load_t5_counter(weights_dir: str = "", sd_scripts: str = "", cache_dir: str = "") -> T5TokenCounter:
    """The counter for FLUX captions; ``cache_dir``: a tokenizer_cache_dir the user set, read first."""
    if cache_dir and _is_t5_folder(Path(cache_dir) / T5_CACHE_NAME):
        return T5TokenCounter(load_t5_tokenizer(Path(cache_dir) / T5_CACHE_NAME))
    return T5TokenCounter(load_t5_tokenizer(ensure_t5_tokenizer(weights_dir, sd_scripts)))
