"""openai/clip-vit-large-patch14's tokenizer, built offline from CLIP's BPE merges file.

The tokenizer's vocabulary is fully determined by ``bpe_simple_vocab_16e6.txt.gz``
(openai/CLIP; open-clip-torch ships the same file): 256 byte symbols, the same with
``</w>``, the first 48,894 merges joined, then the start and end tokens, 49,408 ids in
all. Writing those as vocab.json and merges.txt gives transformers' CLIPTokenizer the
ids of the hub repo, so neither caption token counting nor sd-scripts' train_network.py
needs the Hugging Face Hub.

The folder is built once in the weights cache at
``<cache>/sd-scripts-tokenizer/openai_clip-vit-large-patch14/``: that parent is what
sd-scripts' ``--tokenizer_cache_dir`` wants (``strategy_base._load_tokenizer`` loads
``<dir>/<repo id with "/" as "_">`` when it exists, else downloads and saves there).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

from builder import weights as W
from builder.errors import BuilderError, MissingWeightError
from builder.io import atomic_folder
from builder.weights import CLIP_REPO_ID

SD_SCRIPTS_CACHE = "sd-scripts-tokenizer"  # the tokenizer_cache_dir the kohya files get by default
CLIP_CACHE_NAME = CLIP_REPO_ID.replace("/", "_")  # sd-scripts: model_id.replace("/", "_")
# SDXL's second tokenizer (sd-scripts strategy_sdxl.TOKENIZER2_PATH): OpenCLIP's, the same
# BPE vocabulary, padded with "!" (id 0) instead of the end token.
BIGG_REPO_ID = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
BIGG_CACHE_NAME = BIGG_REPO_ID.replace("/", "_")
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
MODEL_MAX_LENGTH = 77
VOCAB_SIZE = 49408
# What CLIP's SimpleTokenizer keeps: the vocabulary is 49152 + 256 ids, minus the 256 byte
# symbols, their 256 "</w>" forms and the two special tokens.
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD_TOKENS = {CLIP_CACHE_NAME: EOS, BIGG_CACHE_NAME: "!"}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (no whitespace or controls).

    Its order is the vocabulary's first 256 ids: the printable bytes, then the others.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def read_merges(bpe_path: Path) -> list[str]:
    """The merges CLIP uses: the lines after the header, as many as the vocabulary holds."""
    try:
        with gzip.open(bpe_path) as fh:
            lines = fh.read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise BuilderError(f"{bpe_path}: not a readable gzip BPE file ({exc})") from None
    merges = lines[1 : N_MERGES + 1]
    if len(merges) != N_MERGES or any(len(m.split()) != 2 for m in merges):
        raise BuilderError(f"{bpe_path}: not CLIP's BPE merges file (expected {N_MERGES} 'a b' lines)")
    return merges


def write_clip_tokenizer(folder: Path, bpe_path: Path, pad_token: str = EOS) -> Path:
    """Write a transformers CLIPTokenizer folder (model_max_length 77) from ``bpe_path``; return it."""
    folder = Path(folder)
    merges = read_merges(Path(bpe_path))
    byte_chars = list(bytes_to_unicode().values())
    vocab = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m.split()) for m in merges), BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # As in the hub repo: padding with the end token is what sd-scripts reads as "SD v1".
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = {"model_max_length": MODEL_MAX_LENGTH, "tokenizer_class": "CLIPTokenizer", "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def open_clip_bpe() -> Path | None:
    """open-clip-torch's copy of the BPE file, if that package is installed (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / BPE_NAME
    return path if path.is_file() else None


def check_bpe(path: Path) -> Path:
    """``path`` if it is byte-identical to the registry's file (1.3 MB: hashing is instant)."""
    spec = W.spec_for("clip_bpe")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if spec.sha256 is not None and digest != spec.sha256:
        raise BuilderError(
            f"{path}: sha256 {digest} is not CLIP's {BPE_NAME} ({spec.sha256}); delete it and run "
            "`python launch.py weights --fetch clip_bpe`"
        )
    return path


def bpe_file(weights_dir: str = "") -> Path:
    """The BPE file: the weights cache's copy, else open-clip-torch's, else MissingWeightError."""
    cached = W.weight_path("clip_bpe", weights_dir)
    if cached.is_file():
        return check_bpe(cached)
    packaged = open_clip_bpe()
    if packaged is not None:
        return check_bpe(packaged)
    raise MissingWeightError(
        f"CLIP's {BPE_NAME} (clip_bpe) is missing; the CLIP tokenizer is built from it. Run "
        f"`python launch.py weights --fetch clip_bpe`, or {W.manual_hint(W.spec_for('clip_bpe'), weights_dir)}"
    )


def tokenizer_cache_root(weights_dir: str = "") -> Path:
    """The folder to give sd-scripts as ``tokenizer_cache_dir``."""
    return W.cache_dir(weights_dir) / SD_SCRIPTS_CACHE


def is_tokenizer_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("vocab.json", "merges.txt"))


def ensure_clip_tokenizer(weights_dir: str = "", name: str = CLIP_CACHE_NAME) -> Path:
    """The local CLIP tokenizer folder in the weights cache, built from the BPE file if absent.

    ``name``: CLIP_CACHE_NAME, or BIGG_CACHE_NAME for SDXL's second tokenizer.

    Built in a temporary folder beside it and renamed into place, so a half-written
    folder is never taken for a tokenizer (by this builder or by sd-scripts).
    """
    folder = tokenizer_cache_root(weights_dir) / name
    if is_tokenizer_folder(folder):
        return folder
    bpe = bpe_file(weights_dir)
    # a partial folder (e.g. an interrupted sd-scripts save) is replaced
    with atomic_folder(folder, "CLIP tokenizer") as tmp:
        write_clip_tokenizer(tmp, bpe, PAD_TOKENS[name])
    return folder


def hub_has(repo_id: str) -> bool:
    """True when the Hugging Face cache holds ``repo_id``'s vocab.json and merges.txt."""
    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("vocab.json", "merges.txt"))
