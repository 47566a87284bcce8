"""Downloading registry weights: resume, checksum, unpack, move into place atomically.

A file downloads into ``<file>.part`` beside its final place; an interrupted download
resumes from there with an HTTP Range request. Only a file whose size and sha256 match
the registry (and its CRC32, where one is published) is moved to its final name (one
``os.replace``), so a file under its final name is always complete. A file with mirrors is
tried at each URL in turn until one verifies. Each host is probed with a short connect
timeout first, so a machine without network fails in seconds with a message that says, for
every missing file, its URL and the exact path to put it by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
import zlib
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from builder import weights as W
from builder.console import console
from builder.errors import BuilderError, MissingWeightError

CONNECT_TIMEOUT = 4.0  # seconds to open a TCP connection before a host counts as unreachable
READ_TIMEOUT = 60.0  # seconds of silence mid-transfer before giving up (the .part is kept)
CHUNK = 1 << 20
USER_AGENT = "character-lora-builder/0.1 (+python urllib)"
PART_NAME = "download.part"  # download_named: bytes of a file whose name comes with the response


class DownloadError(BuilderError):
    """One file could not be downloaded or did not verify."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status code when the server answered with an error


def byte_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _probe_target(url: str) -> tuple[str, int]:
    """The host:port a request for ``url`` first connects to (the proxy, if one is set)."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


class HostProbe:
    """Connects once per host with a short timeout and remembers the answer."""

    def __init__(self, timeout: float = CONNECT_TIMEOUT) -> None:
        self.timeout = timeout
        self._seen: dict[tuple[str, int], str | None] = {}

    def error(self, url: str) -> str | None:
        """None if the host answers, else why not."""
        target = _probe_target(url)
        if target not in self._seen:
            try:
                socket.create_connection(target, timeout=self.timeout).close()
                self._seen[target] = None
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                self._seen[target] = f"cannot reach {target[0]}:{target[1]} ({reason})"
        return self._seen[target]


class _NoCrossHostAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the Authorization header to another host.

    Civitai answers a download with a redirect to a pre-signed storage URL; urllib would
    forward the token there (and the storage host refuses a request signed twice).
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_NoCrossHostAuth)


def _open(url: str, headers: dict[str, str], timeout: float):  # type: ignore[no-untyped-def]
    return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = READ_TIMEOUT) -> object:
    """GET a JSON document; DownloadError (with the HTTP status) when it fails."""
    try:
        with _open(url, {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}, timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    except ValueError as exc:
        raise DownloadError(f"{url}: not JSON ({exc})") from None


def content_disposition_name(headers: Message | None) -> str | None:
    """The file name a server gives in Content-Disposition, reduced to a safe base name."""
    if headers is None:
        return None
    raw = headers.get_filename()  # handles filename= and RFC 2231 filename*=
    if not raw:
        return None
    name = PurePosixPath(raw.replace("\\", "/")).name.strip()
    return name if name not in ("", ".", "..") else None


def _transfer(
    url: str,
    part: Path,
    *,
    size: int | None,
    sha256: str | None,
    label: str,
    progress: Progress | None,
    read_timeout: float,
    headers: dict[str, str] | None,
    crc32: str | None = None,
) -> tuple[str, Message | None]:
    """Fill ``part`` from ``url`` (resuming it) and verify it; its sha256 and the response headers.

    Raises DownloadError naming the URL and the file when the transfer fails (the .part
    is kept for the next attempt) or when size, sha256 or CRC32 differ (the .part is deleted).
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    hasher, crc = hashlib.sha256(), 0
    if offset:
        with open(part, "rb") as fh:
            while chunk := fh.read(CHUNK):
                hasher.update(chunk)
                crc = zlib.crc32(chunk, crc)
    task = progress.add_task(label, total=size, completed=offset) if progress else None

    expected = size
    answer: Message | None = None
    if size is None or offset < size:
        request_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            resp = _open(url, request_headers, read_timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 416 or not offset:  # 416: nothing after `offset`, the .part is whole
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}", status=exc.code) from None
            resp = None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"{url}: {reason}") from None
        if resp is not None:
            with resp:
                answer = resp.headers
                mode = "ab"
                if offset and resp.status != 206:  # the server ignored Range: start over
                    offset, mode, hasher, crc = 0, "wb", hashlib.sha256(), 0
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and not resp.headers.get("Content-Encoding"):
                    # Without a registry size, the server's length is what "complete" means.
                    expected = expected or offset + int(length)
                if progress is not None and task is not None:
                    progress.update(task, total=expected, completed=offset)
                try:
                    with open(part, mode) as fh:
                        while chunk := resp.read(CHUNK):
                            fh.write(chunk)
                            hasher.update(chunk)
                            crc = zlib.crc32(chunk, crc)
                            if progress is not None and task is not None:
                                progress.advance(task, len(chunk))
                        fh.flush()
                        os.fsync(fh.fileno())
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(
                        f"{url}: transfer broke off ({exc}); {part} keeps "
                        f"{part.stat().st_size:,} B and the next --fetch resumes from there"
                    ) from None

    got = part.stat().st_size
    if expected is not None and got < expected:
        # http.client ends a cut-off body quietly, so a short file is caught here.
        raise DownloadError(
            f"{url}: only {got:,} of {expected:,} B arrived; {part} is kept and the next "
            "--fetch resumes"
        )
    digest = hasher.hexdigest()
    if (size is not None and got != size) or (sha256 is not None and digest != sha256.lower()):
        part.unlink()
        raise DownloadError(
            f"{url}: checksum bad: got {got:,} B with sha256 {digest}, expected "
            f"{size if size is not None else 'any'} B with sha256 {sha256 or 'unknown'}; "
            f"deleted {part}"
        )
    if crc32 is not None and f"{crc:08x}" != crc32.lower():
        part.unlink()
        raise DownloadError(
            f"{url}: checksum bad: CRC32 {crc:08x}, expected {crc32.lower()}; deleted {part}"
        )
    return digest, answer


def download_file(
    url: str,
    dest: Path,
    *,
    size: int | None,
    sha256: str | None,
    label: str,
    progress: Progress | None = None,
    read_timeout: float = READ_TIMEOUT,
    headers: dict[str, str] | None = None,
    crc32: str | None = None,
) -> str:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed if present); return its sha256.

    Only a verified file is moved to ``dest``; see ``_transfer`` for the failures.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    digest, _ = _transfer(url, part, size=size, sha256=sha256, label=label, progress=progress,
                          read_timeout=read_timeout, headers=headers, crc32=crc32)
    os.replace(part, dest)
    return digest


def download_named(
    url: str,
    folder: Path,
    *,
    fallback_name: str,
    size: int | None,
    sha256: str | None,
    progress: Progress | None = None,
    read_timeout: float = READ_TIMEOUT,
    headers: dict[str, str] | None = None,
) -> tuple[Path, str]:
    """Download ``url`` into ``folder`` under the name the server gives (Content-Disposition).

    The bytes go to ``folder/download.part`` (resumed if present), so the name need not be
    known before the first response; ``fallback_name`` is used when the server gives none.
    Returns the final path and its sha256.
    """
    folder = Path(folder)
    part = folder / PART_NAME
    digest, answer = _transfer(url, part, size=size, sha256=sha256, label=fallback_name,
                               progress=progress, read_timeout=read_timeout, headers=headers)
    dest = folder / (content_disposition_name(answer) or fallback_name)
    os.replace(part, dest)
    return dest, digest


def _safe_member(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def extract_pack(spec: W.WeightSpec, zip_path: Path, folder: Path) -> Path:
    """Unzip a model pack so ``folder`` holds its .onnx files directly; return ``folder``.

    Works for zips with files at the top (buffalo_l) and in one inner folder (antelopev2).
    The pack is assembled in a hidden sibling folder and renamed into place.
    """
    tmp = folder.parent / f".{folder.name}.extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for info in zf.infolist():
                    rel = _safe_member(info.filename)
                    if rel is None:
                        raise DownloadError(f"{zip_path}: unsafe path {info.filename!r} in the zip")
                    if info.is_dir():
                        continue
                    out = tmp.joinpath(*rel.parts)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{zip_path}: not a readable zip ({exc})") from None
        subdirs = [p for p in tmp.iterdir() if p.is_dir()]
        candidates = [tmp] + (subdirs if len(subdirs) == 1 else [])
        inner = next((c for c in candidates if all((c / m).is_file() for m in spec.members)), None)
        if inner is None:
            raise DownloadError(
                f"{zip_path}: the zip does not hold {', '.join(spec.members)}"
            )
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(inner, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_crc32_file(url: str, read_timeout: float = READ_TIMEOUT) -> str:
    """The 8-hex-digit CRC32 a published hash file (FaceFusion's ``.hash``) holds."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=read_timeout) as resp:
            text = resp.read(64).decode("ascii", "replace").strip().lower()
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(text) != 8 or any(c not in "0123456789abcdef" for c in text):
        raise DownloadError(f"{url}: not a CRC32 hash file (it holds {text[:20]!r})")
    return text


HF_TOKEN_ENV = "HF_TOKEN"
HUB_HOSTS = ("huggingface.co", "hf.co")


def _is_hub(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in HUB_HOSTS or host.endswith(".huggingface.co")


def hf_headers() -> dict[str, str]:
    """The hub's auth header when HF_TOKEN is set; it is sent to the hub only, never printed or written."""
    token = os.environ.get(HF_TOKEN_ENV, "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def gated_help(spec: W.WeightSpec, status: int | None) -> str:
    why = (f"the hub refused the token in {HF_TOKEN_ENV} (HTTP {status})" if hf_headers()
           else f"it is gated on the Hugging Face hub and {HF_TOKEN_ENV} is not set (HTTP {status})")
    return (
        f"{spec.filename}: {why}. Accept the licence at {spec.gated} (logged in), create a read token at "
        f"https://huggingface.co/settings/tokens and set {HF_TOKEN_ENV} to it (it is sent to the hub only, "
        "never printed or written)"
    )


def _fetch_file(spec: W.WeightSpec, weights_dir: str, probe: HostProbe, progress: Progress) -> Path:
    """Try the official URL, then each mirror, until one gives a file that verifies."""
    dest = W.download_path(spec.name, weights_dir)
    errors: list[str] = []
    headers = hf_headers()
    for url in (spec.url, *spec.mirrors):
        if err := probe.error(url):
            errors.append(err)
            continue
        try:
            crc32 = spec.crc32
            if crc32 is None and spec.crc32_file:
                crc32 = read_crc32_file(f"{url.rsplit('/', 1)[0]}/{spec.crc32_file}")
            digest = download_file(
                url, dest, size=spec.size, sha256=spec.sha256, label=spec.filename,
                progress=progress, crc32=crc32, headers=headers if _is_hub(url) else None,
            )
        except DownloadError as exc:
            if exc.status in (401, 403) and spec.gated:
                errors.append(gated_help(spec, exc.status))
            else:
                errors.append(str(exc))
            continue
        if spec.sha256 is not None:
            W.remember_verified(dest, digest, weights_dir)
        return dest
    raise DownloadError("; ".join(errors))


def _fetch_zip(spec: W.WeightSpec, weights_dir: str, probe: HostProbe, progress: Progress) -> Path:
    zip_path = W.download_path(spec.name, weights_dir)
    if zip_path.is_file():
        # A zip put there by hand (or left by an interrupted unpack): verify it as if downloaded.
        got = W.sha256_file(zip_path)
        if (spec.sha256 and got != spec.sha256) or (spec.size and zip_path.stat().st_size != spec.size):
            raise DownloadError(
                f"{zip_path}: checksum bad (sha256 {got}, expected {spec.sha256}); "
                "delete it and fetch again"
            )
    else:
        _fetch_file(spec, weights_dir, probe, progress)
    folder = extract_pack(spec, zip_path, W.weight_path(spec.name, weights_dir))
    zip_path.unlink()
    return folder


def _fetch_hf(spec: W.WeightSpec, probe: HostProbe) -> Path:
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise DownloadError("HF_HUB_OFFLINE is set")
    if err := probe.error(constants.ENDPOINT):
        raise DownloadError(err)
    try:
        # A repo with named members (the WD14 taggers' ONNX and tag list) gets only those.
        snap = Path(snapshot_download(spec.url, allow_patterns=list(spec.members) or W.HF_ALLOW))
        if not spec.members and not any((snap / w).is_file() for w in W.HF_WEIGHT_FILES):
            # Older repos have only the pickle; fetch it rather than every format there.
            hf_hub_download(spec.url, "pytorch_model.bin")
    except Exception as exc:  # the hub raises many types (HTTP, offline, validation)
        raise DownloadError(f"{spec.url}: {type(exc).__name__}: {exc}") from None
    found = W.hf_snapshot(spec)
    if found is None:
        wanted = ", ".join(spec.members) or "config.json and weights"
        raise DownloadError(f"{spec.url}: the hub snapshot has no {wanted}")
    return found


def fetch(names: list[str], weights_dir: str = "", connect_timeout: float = CONNECT_TIMEOUT) -> list[Path]:
    """Make every named weight present and verified; raise MissingWeightError for the rest.

    Files already present and verified are left alone. A file whose checksum is bad is
    downloaded again (the bad one is replaced only once the new one verifies).
    """
    probe = HostProbe(connect_timeout)
    done: list[Path] = []
    failures: list[tuple[W.WeightSpec, str]] = []
    with byte_progress() as progress:
        for name in W.resolve_names(names):
            spec = W.spec_for(name)
            st = W.state(name, weights_dir, verify=True)
            if st.state in (W.PRESENT, W.UNVERIFIED):
                progress.console.print(f"[green]OK[/green] {name}: {st.path}")
                done.append(st.path)
                continue
            if st.state == W.BAD:
                progress.console.print(f"[yellow]{name}: {st.detail}; downloading it again[/yellow]")
            try:
                if spec.kind == "hf":
                    path = _fetch_hf(spec, probe)
                elif spec.kind == "zip":
                    path = _fetch_zip(spec, weights_dir, probe, progress)
                else:
                    path = _fetch_file(spec, weights_dir, probe, progress)
            except DownloadError as exc:
                failures.append((spec, str(exc)))
                continue
            progress.console.print(f"[green]fetched[/green] {name}: {path}")
            done.append(path)
    if failures:
        lines = [f"could not fetch {len(failures)} of the model files:"]
        for spec, reason in failures:
            lines += [
                f"  - {spec.filename} ({spec.name}): {reason}",
                f"      URL: {W.page_url(spec)}",
                *(f"      mirror: {m}" for m in spec.mirrors),
                f"      by hand: {W.manual_hint(spec, weights_dir)}",
            ]
        raise MissingWeightError("\n".join(lines))
    return done
