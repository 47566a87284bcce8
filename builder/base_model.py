"""Where the base model comes from: one spec string -> a local file or diffusers folder.

``--base-model`` / ``[paths] base_model`` accepts, tried in this order:

- a local ``.safetensors``/``.ckpt`` file or diffusers folder (``model_index.json``);
- a registry name (``launch.py weights``: entries with a ``family``), fetched and verified
  like every registry weight;
- ``civitai:<modelVersionId>``, a civitai download URL or a civitai model page URL with
  ``modelVersionId``: the metadata API gives the file name and SHA256, the download API
  redirects to the file (name in Content-Disposition); the file is verified and cached by
  hash, so a second run needs no network. ``CIVITAI_TOKEN`` is sent as a header only;
- any other ``https://`` URL, resumable, verified against ``[paths] base_model_sha256``
  when given;
- a Hugging Face repo id ``owner/name[@revision][:file.safetensors]``, through
  huggingface_hub and its cache (``HF_ENDPOINT`` picks another hub);
- ``random-<family>`` (``random-sd15``, ``random-sdxl``: what ``--random-weights`` uses when no
  base model is given): a seeded random-weight model of the family's real architecture, made
  once into the cache by the family module (builder.families), with nothing downloaded.

``check_base_model`` answers cheaply, before any stage runs, whether the spec is present or
can be fetched (its host answers); ``resolve_base_model`` makes it present. Both raise a
BuilderError saying what to do: set the token, download by hand from a page, or put the
file at a path. Nothing here ever prints, logs or writes the civitai token.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from builder import families
from builder import weights as W
from builder.config import DEFAULT_BASE_MODEL, Config
from builder.console import console
from builder.errors import BuilderError, MissingWeightError

RANDOM_PREFIX = "random-"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
CIVITAI_TOKEN_ENV = "CIVITAI_TOKEN"
CIVITAI_API_ENV = "CIVITAI_API_BASE"  # another civitai host (tests point it at a local server)
CIVITAI_API = "https://civitai.com"
CACHE_SUBDIR = "base_models"  # inside the weights cache: civitai/<sha256>/, url/<hash>/
# A diffusers repo's pipeline files; the .bin and fp16/ema variants beside them are skipped.
HF_FOLDER_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                      "*/model.safetensors"]
_HF_ID = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?(:[^:]+)?$")
_CIVITAI_HOSTS = ("civitai.com", "www.civitai.com", "civitai.green")


@dataclass(frozen=True)
class BaseModelSource:
    """A parsed spec; ``spec`` is what the user gave, with any token taken out."""

    kind: str  # local | registry | set | civitai | url | hf | random
    spec: str
    path: Path | None = None  # local
    name: str = ""  # registry; random: the family
    version_id: str = ""  # civitai
    url: str = ""  # url (token-free)
    repo_id: str = ""  # hf
    revision: str | None = None  # hf
    filename: str = ""  # hf: one file of the repo; empty: the repo is a diffusers folder


@dataclass(frozen=True)
class ResolvedBaseModel:
    path: Path  # a local single-file checkpoint or diffusers folder
    family_hint: str  # a builder.families name ("sd15", "sdxl"), "" when the files do not say
    source: str  # BaseModelSource.kind
    spec: str  # as given, token-free
    sha256: str | None = None  # when it was verified on download


@dataclass(frozen=True)
class BaseModelCheck:
    source: BaseModelSource
    present: Path | None  # already local: nothing to fetch
    fetch_from: str = ""  # otherwise: the URL (or repo) it will be fetched or generated from


# ---- parsing ------------------------------------------------------------------------------


def random_spec(family: str) -> str:
    """The spec of the family's generated random base (``random-sd15``)."""
    return RANDOM_PREFIX + families.family(family).NAME


RANDOM_SPEC = random_spec(families.DEFAULT)  # what --random-weights trains on when nothing says otherwise


def base_model_spec(cfg: Config) -> str:
    """The configured spec, else the family's random base for --random-weights, else the default.

    The family is ``kohya.model_family``; "auto" with nothing to tell it from is SD 1.5.
    """
    if cfg.paths.base_model:
        return cfg.paths.base_model
    if not cfg.runtime.random_weights:
        return DEFAULT_BASE_MODEL
    setting = cfg.kohya.model_family
    return random_spec(families.DEFAULT if setting == "auto" else setting)


def _civitai_version(url: str) -> str | None:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    api = urlsplit(civitai_api()).hostname
    if host not in _CIVITAI_HOSTS and host != api:
        return None
    if m := re.match(r"^/api/download/models/(\d+)", parts.path):
        return m.group(1)
    query = dict(parse_qsl(parts.query))
    if parts.path.startswith("/models/") and query.get("modelVersionId", "").isdigit():
        return query["modelVersionId"]
    return None


def _without_token(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "token"]
    return urlunsplit(parts._replace(query=urlencode(query)))


def parse_spec(spec: str) -> BaseModelSource:
    spec = spec.strip()
    if not spec:
        raise BuilderError("base model not given: pass --base-model or set [paths] base_model")
    if spec.lower().startswith(("http://", "https://")):
        clean = _without_token(spec)
        if version := _civitai_version(clean):
            return BaseModelSource("civitai", clean, version_id=version)
        return BaseModelSource("url", clean, url=clean)
    if spec.lower().startswith("civitai:"):
        version = spec.split(":", 1)[1].strip()
        if not version.isdigit():
            raise BuilderError(f"base model {spec!r}: civitai:<modelVersionId> takes a number (e.g. civitai:143906)")
        return BaseModelSource("civitai", spec, version_id=version)
    if "," in spec:
        return BaseModelSource("set", spec, name=spec)
    if spec.startswith(RANDOM_PREFIX) and spec.removeprefix(RANDOM_PREFIX) in families.FAMILIES:
        return BaseModelSource("random", spec, name=spec.removeprefix(RANDOM_PREFIX))
    local = Path(spec).expanduser()
    if local.exists():
        return BaseModelSource("local", spec, path=local)
    if spec in W.REGISTRY and W.REGISTRY[spec].part:
        return BaseModelSource("set", spec, name=spec)  # one part names its whole set (its companions)
    if spec in W.REGISTRY and W.REGISTRY[spec].family:
        return BaseModelSource("registry", spec, name=spec)
    looks_like_path = spec.startswith((".", "/", "~", "\\")) or (
        ":" not in spec and local.suffix.lower() in SINGLE_FILE_SUFFIXES
    )
    if looks_like_path or Path(spec).is_absolute():
        raise BuilderError(f"base model {local} does not exist (--base-model / [paths] base_model)")
    if _HF_ID.match(spec):
        rest, _, filename = spec.partition(":")
        repo_id, _, revision = rest.partition("@")
        return BaseModelSource("hf", spec, repo_id=repo_id, revision=revision or None, filename=filename)
    known = ", ".join(n for n, s in W.REGISTRY.items() if s.family)
    raise BuilderError(
        f"base model {spec!r} is not a file or folder here, not a registry name ({known}), not "
        "civitai:<versionId>, an https URL or a Hugging Face repo id owner/name[@revision][:file]"
    )


# ---- the model family -----------------------------------------------------------------------


def detect_family(path: Path) -> str:
    """The family from the files' own layout (builder.families), "" when unsure.

    An unreadable or SD 2.x file is "" here; train and sample refuse it with the reason.
    """
    try:
        return families.detect_family(path) or ""
    except BuilderError:
        return ""


# ---- civitai ------------------------------------------------------------------------------


def civitai_api() -> str:
    return os.environ.get(CIVITAI_API_ENV, CIVITAI_API).rstrip("/")


def _civitai_headers() -> dict[str, str]:
    token = os.environ.get(CIVITAI_TOKEN_ENV, "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _scrub(text: str) -> str:
    """``text`` with the token taken out, whatever path it came by."""
    token = os.environ.get(CIVITAI_TOKEN_ENV, "").strip()
    return text.replace(token, "<CIVITAI_TOKEN>") if token else text


def _civitai_page(version: str) -> str:
    return f"https://civitai.com/api/download/models/{version} (model page: https://civitai.com/model-versions/{version})"


def _civitai_index(version: str, weights_dir: str) -> Path:
    return W.cache_dir(weights_dir) / CACHE_SUBDIR / "civitai" / f"{version}.json"


def civitai_manual_folder(version: str, weights_dir: str) -> Path:
    """Where a file downloaded by hand for this version is picked up."""
    return W.cache_dir(weights_dir) / CACHE_SUBDIR / "civitai" / version


def _civitai_cached(version: str, weights_dir: str) -> Path | None:
    """The file a previous run downloaded and verified for this version, or one put there by hand."""
    try:
        rec = json.loads(_civitai_index(version, weights_dir).read_text(encoding="utf-8"))
        path = W.cache_dir(weights_dir) / CACHE_SUBDIR / "civitai" / rec["sha256"] / rec["file"]
        if path.is_file():
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    manual = civitai_manual_folder(version, weights_dir)
    files = [p for p in manual.iterdir() if p.suffix.lower() in SINGLE_FILE_SUFFIXES] if manual.is_dir() else []
    return files[0] if len(files) == 1 else None


def _civitai_help(version: str, weights_dir: str, why: str) -> str:
    return (
        f"civitai model version {version}: {why}. Either set {CIVITAI_TOKEN_ENV} to a civitai API key "
        "(civitai.com > account settings > API keys; it is sent as a header and never written "
        f"anywhere), or download {_civitai_page(version)} by hand and pass its path with "
        f"--base-model, or put it in {civitai_manual_folder(version, weights_dir)}/"
    )


def _pick_file(meta: dict, version: str) -> dict:
    files = [f for f in meta.get("files") or [] if isinstance(f, dict)]
    models = [f for f in files if f.get("type", "Model") == "Model"] or files
    primary = [f for f in models if f.get("primary")]
    if not (primary or models):
        raise BuilderError(f"civitai model version {version}: the metadata lists no model file")
    return (primary or models)[0]


def _fetch_civitai(src: BaseModelSource, weights_dir: str) -> tuple[Path, str | None]:
    from builder.fetch import DownloadError, byte_progress, download_named, get_json

    version = src.version_id
    cached = _civitai_cached(version, weights_dir)
    if cached is not None:
        return cached, (cached.parent.name if cached.parent.name != version else None)
    headers = _civitai_headers()
    try:
        meta = get_json(f"{civitai_api()}/api/v1/model-versions/{version}", headers=headers)
        entry = _pick_file(meta if isinstance(meta, dict) else {}, version)
        sha = str((entry.get("hashes") or {}).get("SHA256", "")).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise BuilderError(f"civitai model version {version}: the metadata gives no SHA256 for its file")
        name = Path(str(entry.get("name") or f"civitai-{version}.safetensors")).name
        url = str(entry.get("downloadUrl") or f"{civitai_api()}/api/download/models/{version}")
        folder = W.cache_dir(weights_dir) / CACHE_SUBDIR / "civitai" / sha
        console.print(f"downloading {name} from civitai (version {version}, sha256 {sha[:12]}...)")
        with byte_progress() as progress:
            path, digest = download_named(_without_token(url), folder, fallback_name=name, size=None,
                                          sha256=sha, progress=progress, headers=headers)
    except DownloadError as exc:
        if exc.status in (401, 403):
            why = ("civitai wants an API key for this file (HTTP 401)" if not headers
                   else f"civitai refused the API key in {CIVITAI_TOKEN_ENV} (HTTP {exc.status})")
            raise MissingWeightError(_scrub(_civitai_help(version, weights_dir, why))) from None
        if exc.status == 404:
            raise MissingWeightError(_scrub(_civitai_help(version, weights_dir, "civitai has no such version (HTTP 404)"))) from None
        raise MissingWeightError(_scrub(_civitai_help(version, weights_dir, str(exc)))) from None
    W.remember_verified(path, digest, weights_dir)
    from builder.io import atomic_write_json

    atomic_write_json(_civitai_index(version, weights_dir), {"sha256": digest, "file": path.name, "version": version})
    return path, digest


# ---- any https URL --------------------------------------------------------------------------


def _url_folder(url: str, weights_dir: str) -> Path:
    return W.cache_dir(weights_dir) / CACHE_SUBDIR / "url" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _url_cached(url: str, weights_dir: str) -> Path | None:
    from builder.fetch import PART_NAME

    folder = _url_folder(url, weights_dir)
    files = [p for p in folder.iterdir() if p.is_file() and p.name != PART_NAME] if folder.is_dir() else []
    return files[0] if len(files) == 1 else None


def _fetch_url(src: BaseModelSource, cfg: Config) -> tuple[Path, str | None]:
    from builder.fetch import DownloadError, byte_progress, download_named

    weights_dir = cfg.runtime.weights_dir
    want = cfg.paths.base_model_sha256.strip().lower() or None
    cached = _url_cached(src.url, weights_dir)
    if cached is not None:
        if want is not None and W.sha256_file(cached) != want:
            raise BuilderError(f"{cached} (from {src.url}) does not have sha256 {want}; delete it to download again")
        return cached, want
    folder = _url_folder(src.url, weights_dir)
    fallback = Path(urlsplit(src.url).path).name or "model.safetensors"
    try:
        with byte_progress() as progress:
            path, digest = download_named(src.url, folder, fallback_name=fallback, size=None, sha256=want,
                                          progress=progress)
    except DownloadError as exc:
        raise MissingWeightError(
            f"base model {src.url}: {exc}. Download it by hand and pass its path with --base-model"
        ) from None
    if want is not None:
        W.remember_verified(path, digest, weights_dir)
    return path, digest


# ---- Hugging Face -------------------------------------------------------------------------


def _hf_endpoint() -> str | None:
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, when it is first imported.
    return os.environ.get("HF_ENDPOINT") or None


def _hf_cached(src: BaseModelSource) -> Path | None:
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if src.filename:
        found = try_to_load_from_cache(src.repo_id, src.filename, revision=src.revision)
        return Path(found) if isinstance(found, str) else None
    try:
        snap = Path(snapshot_download(src.repo_id, revision=src.revision, allow_patterns=HF_FOLDER_PATTERNS,
                                      local_files_only=True))
    except Exception:  # the hub raises several types for "not cached"
        return None
    return snap if (snap / "model_index.json").is_file() else None


def _fetch_hf(src: BaseModelSource) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download

    cached = _hf_cached(src)
    if cached is not None:
        return cached
    where = f"https://huggingface.co/{src.repo_id}"
    try:
        if src.filename:
            return Path(hf_hub_download(src.repo_id, src.filename, revision=src.revision, endpoint=_hf_endpoint()))
        snap = Path(snapshot_download(src.repo_id, revision=src.revision, allow_patterns=HF_FOLDER_PATTERNS,
                                      endpoint=_hf_endpoint()))
    except Exception as exc:  # the hub raises many types (HTTP, offline, gated, not found)
        raise MissingWeightError(
            f"base model {src.spec}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            f"Check the repo at {where}; for a single checkpoint name it as owner/name:file.safetensors; "
            "or download it by hand and pass its path with --base-model"
        ) from None
    if not (snap / "model_index.json").is_file():
        raise BuilderError(
            f"base model {src.spec}: the repo has no model_index.json (not a diffusers folder); "
            f"name its checkpoint file: {src.repo_id}:<file>.safetensors (see {where}/tree/main)"
        )
    return snap


# ---- a multi-file base (FLUX.1, Chroma): parts by path or registry name ----------------------


def flux_manifest() -> str:
    from builder.families import flux

    return flux.MANIFEST


def set_folder(spec: str, weights_dir: str) -> Path:
    """Where the list of a set's parts is kept (one folder per spec)."""
    digest = hashlib.sha256(",".join(p.strip() for p in spec.split(",")).encode()).hexdigest()[:16]
    return W.cache_dir(weights_dir) / CACHE_SUBDIR / "sets" / digest


def _set_complete(folder: Path) -> bool:
    from builder.families import flux

    try:
        flux.base_set(folder)
    except BuilderError:
        return False
    return True


def set_parts(spec: str) -> list[tuple[str, str]]:
    """(part, "registry" | "local") for each comma-separated item, plus a registry transformer's companions.

    A registry part's companions fill only the parts no other item names.
    """
    from builder.families import flux

    items = [p.strip() for p in spec.split(",") if p.strip()]
    if not items:
        raise BuilderError("base model: an empty list of FLUX parts")
    out: list[tuple[str, str]] = []
    for item in items:
        if item in W.REGISTRY and W.REGISTRY[item].part:
            out.append((item, "registry"))
        elif Path(item).expanduser().exists():
            out.append((str(Path(item).expanduser()), "local"))
        else:
            known = ", ".join(n for n, s in W.REGISTRY.items() if s.part)
            raise BuilderError(
                f"base model part {item!r} is not a file or folder here nor a FLUX/Chroma registry name ({known})"
            )
    named_roles = {W.REGISTRY[i].part for i, k in out if k == "registry"}
    for item, kind in out:
        if kind == "local" and Path(item).is_file():
            role = flux.role_of(families.safetensors_keys(Path(item)))
            if role:
                named_roles.add(role)
    for item, kind in list(out):
        if kind == "registry" and W.REGISTRY[item].part == "transformer":
            for companion in flux.REGISTRY_COMPANIONS.get(item, ()):
                if W.REGISTRY[companion].part not in named_roles:
                    out.append((companion, "registry"))
                    named_roles.add(W.REGISTRY[companion].part)
    return out


def _check_set(src: BaseModelSource, cfg: Config, connect_timeout: float | None) -> BaseModelCheck:
    """Local parts are checked now; registry parts not yet here must be fetchable (a gated one needs HF_TOKEN)."""
    from builder.fetch import CONNECT_TIMEOUT, HF_TOKEN_ENV, HostProbe, gated_help

    missing = []
    for item, kind in set_parts(src.spec):
        if kind == "local":
            if Path(item).is_dir():
                check_local(Path(item))
            continue
        if W.state(item, cfg.runtime.weights_dir).state not in (W.PRESENT, W.UNVERIFIED):
            missing.append(W.REGISTRY[item])
    if not missing:
        return BaseModelCheck(src, None, "its parts are here")
    for spec in missing:
        if spec.gated and not os.environ.get(HF_TOKEN_ENV, "").strip():
            raise MissingWeightError(f"base model {src.spec}: {gated_help(spec, 401)}")
    probe = HostProbe(connect_timeout or CONNECT_TIMEOUT)
    for spec in missing:
        if err := probe.error(spec.url):
            raise MissingWeightError(
                f"base model part {spec.name} is not here and cannot be fetched: {err}; "
                f"{W.manual_hint(spec, cfg.runtime.weights_dir)}"
            )
    return BaseModelCheck(src, None, ", ".join(s.url for s in missing))


def _resolve_set(src: BaseModelSource, cfg: Config) -> Path:
    """Fetch the registry parts, check each part, and write the set's list of files (flux_base.json)."""
    from builder.families import flux
    from builder.fetch import fetch

    weights_dir = cfg.runtime.weights_dir
    parts = set_parts(src.spec)
    wanted = [item for item, kind in parts if kind == "registry"
              and W.state(item, weights_dir).state not in (W.PRESENT, W.UNVERIFIED)]
    if wanted:
        fetch(wanted, weights_dir)
    roles: dict[str, Path] = {}
    for item, kind in parts:
        if kind == "local" and Path(item).is_dir():
            found = {r: p for r, (p, _) in flux.find_parts(Path(item)).items()}
        else:
            path = W.require(item, weights_dir) if kind == "registry" else Path(item)
            role = flux.role_of(families.safetensors_keys(path))
            if role is None:
                raise BuilderError(f"base model part {path} is none of the FLUX parts ({flux.BASE_FILES})")
            found = {role: path}
        for role, path in found.items():
            if role in roles and roles[role] != path:
                raise BuilderError(f"base model {src.spec}: two {role} files ({roles[role]}, {path}); name one")
            roles[role] = path
    folder = set_folder(src.spec, weights_dir)
    folder.mkdir(parents=True, exist_ok=True)
    flux.write_manifest(folder, roles)
    flux.base_set(folder)  # every part there, each the part it is given as
    return folder


# ---- checking and resolving ------------------------------------------------------------------


def _host_of(src: BaseModelSource) -> str:
    if src.kind == "registry":
        return W.REGISTRY[src.name].url
    if src.kind == "civitai":
        return civitai_api()
    if src.kind == "url":
        return src.url
    from huggingface_hub import constants

    return _hf_endpoint() or constants.ENDPOINT


def check_local(path: Path) -> Path:
    """``path`` if it is a diffusers folder or a single-file checkpoint (also sample's check of
    paths.base_model), else a BuilderError saying which it is not."""
    from builder.families import flux

    if path.is_dir():
        if not (path / "model_index.json").is_file():
            if flux.find_parts(path):  # FLUX/Chroma single files: every part must be there
                flux.base_set(path)
                return path
            raise BuilderError(
                f"base model folder {path} is not a diffusers pipeline (no model_index.json) nor a FLUX/Chroma "
                f"set ({flux.BASE_FILES})"
            )
    elif path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise BuilderError(f"base model {path} is neither a diffusers folder nor a .safetensors/.ckpt file")
    elif path.suffix.lower() == ".safetensors":
        parts = flux.find_parts(path) if flux.role_of(families.safetensors_keys(path)) == "transformer" else {}
        if parts:
            flux.base_set(path)  # a FLUX transformer file: its other parts must be beside it
    return path


def local_copy(src: BaseModelSource, cfg: Config) -> Path | None:
    """The local file or folder for ``src`` when nothing needs fetching (no network used)."""
    weights_dir = cfg.runtime.weights_dir
    if src.kind == "local":
        assert src.path is not None
        return check_local(src.path)
    if src.kind == "registry":
        st = W.state(src.name, weights_dir)
        return st.path if st.state in (W.PRESENT, W.UNVERIFIED) else None
    if src.kind == "civitai":
        return _civitai_cached(src.version_id, weights_dir)
    if src.kind == "url":
        return _url_cached(src.url, weights_dir)
    if src.kind == "hf":
        return _hf_cached(src)
    if src.kind == "set":
        folder = set_folder(src.spec, weights_dir)
        return folder if (folder / flux_manifest()).is_file() and _set_complete(folder) else None
    return families.family(src.name).random_base_cached(weights_dir, cfg.runtime.seed)


def check_base_model(spec: str, cfg: Config, connect_timeout: float | None = None) -> BaseModelCheck:
    """Whether ``spec`` is here or can be fetched, in seconds and without downloading anything."""
    from builder.fetch import CONNECT_TIMEOUT, HostProbe

    src = parse_spec(spec)
    present = local_copy(src, cfg)
    if present is not None:
        return BaseModelCheck(src, present)
    if src.kind == "random":
        return BaseModelCheck(src, None, "generated here (seeded random weights)")
    if src.kind == "set":
        return _check_set(src, cfg, connect_timeout)
    host = _host_of(src)
    if src.kind == "hf" and os.environ.get("HF_HUB_OFFLINE"):
        err: str | None = "HF_HUB_OFFLINE is set"
    else:
        err = HostProbe(connect_timeout or CONNECT_TIMEOUT).error(host)
    if err is not None:
        if src.kind == "registry":
            hint = W.manual_hint(W.REGISTRY[src.name], cfg.runtime.weights_dir)
        elif src.kind == "civitai":
            raise MissingWeightError(_scrub(_civitai_help(src.version_id, cfg.runtime.weights_dir, err)))
        else:
            hint = "download it by hand and pass its path with --base-model"
        raise MissingWeightError(f"base model {src.spec} is not here and cannot be fetched: {err}; {hint}")
    return BaseModelCheck(src, None, host)


def resolve_base_model(spec: str, cfg: Config) -> ResolvedBaseModel:
    """Make ``spec`` local (download, verify or generate as needed) and say what it is."""
    src = parse_spec(spec)
    weights_dir = cfg.runtime.weights_dir
    sha: str | None = None
    if src.kind == "local":
        assert src.path is not None
        path = check_local(src.path)
    elif src.kind == "registry":
        from builder.fetch import fetch

        if W.state(src.name, weights_dir).state not in (W.PRESENT, W.UNVERIFIED):
            fetch([src.name], weights_dir)
        path, sha = W.require(src.name, weights_dir), W.REGISTRY[src.name].sha256
    elif src.kind == "civitai":
        path, sha = _fetch_civitai(src, weights_dir)
    elif src.kind == "url":
        path, sha = _fetch_url(src, cfg)
    elif src.kind == "hf":
        path = _fetch_hf(src)
    elif src.kind == "set":
        path = _resolve_set(src, cfg)
    else:
        path = families.family(src.name).make_random_base(weights_dir, cfg.runtime.seed)
    if src.kind == "registry":
        family = W.REGISTRY[src.name].family
    elif src.kind == "set":
        from builder.families import flux

        family = flux.base_set(path).family
    else:
        family = src.name if src.kind == "random" else detect_family(path)
    return ResolvedBaseModel(path=path, family_hint=family, source=src.kind, spec=src.spec, sha256=sha)
