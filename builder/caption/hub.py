"""Loading Hugging Face models and tokenizers: the local cache first, then the hub, then a clear error."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.errors import MissingWeightError


def hub_offline() -> bool:
    """True when the user asked transformers not to use the network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    import huggingface_hub.constants as hc

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(hc.HF_HUB_OFFLINE) or any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def from_pretrained(
    loader: Callable[..., Any], source: str, what: str, fetch_hint: str, **kwargs: Any
) -> Any:
    """``loader(source, ...)`` from a local folder or the HF cache; download only when online.

    The cache is tried first so an offline machine never waits on network retries.
    """
    folder = Path(source).expanduser()
    if folder.is_dir():
        try:
            return loader(str(folder), local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            raise MissingWeightError(f"{folder}: cannot load the {what} from this folder ({exc})") from None
    try:
        return loader(source, local_files_only=True, **kwargs)
    except OSError as cached_exc:
        if hub_offline():
            raise MissingWeightError(
                f"{what} '{source}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set. "
                f"Get it with {fetch_hint}"
            ) from cached_exc
    try:
        return loader(source, **kwargs)
    except OSError as exc:
        raise MissingWeightError(
            f"{what} '{source}' is not in the Hugging Face cache and could not be downloaded ({exc}). "
            f"Get it with {fetch_hint}"
        ) from None
