"""The review server: Starlette on 127.0.0.1 only, serving the page, the run folder's files
and a small JSON API.

Safety, because the page can change a training set:
- it binds to loopback only and accepts only a loopback Host header (no DNS rebinding);
- every answer forbids framing (X-Frame-Options DENY, CSP frame-ancestors 'none'), so no
  other site can turn a click into a reject; the page runs its own script file and nothing else;
- files come from the run folder only: no ``..``, no absolute paths, no symlink leading out;
  they are served as images, or else as plain text, with nosniff and a sandboxing CSP, so an
  ``.html`` or ``.svg`` file in the run folder never runs as part of the page; donor photos
  (outside it) are reached only through pictures the server made or checked;
- every change needs the per-server token the page carries (header ``X-Review-Token``) and,
  from a browser, an ``Origin`` that is this server's own;
- request bodies are capped (``MAX_BODY``) before they are read into memory;
- a bad request gets a 4xx JSON ``{"error": ...}``, an unexpected failure a 500 JSON, never
  a traceback page;
- changes are serialised by one lock: an override and the settle after it are one step,
  and each override touches only its own field, so two tabs never lose an edit.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from builder.build import MANIFEST, settle
from builder.caption.text import TokenCounter
from builder.config import Config
from builder.console import console
from builder.errors import BuilderError, ImageError
from builder.kohya.files import write_kohya_files
from builder.manifest import Manifest
from builder.overrides import STATUSES, set_override
from builder.review.cards import budget, card_id, cards_answer, page_state, raw_records
from builder.review.thumbs import BROWSER_IMAGES, FULL_KINDS, KINDS, ThumbMaker, sources

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css"}
TOKEN_HEADER = "X-Review-Token"
MAX_CAPTION_CHARS = 4000
MAX_BODY = 256 * 1024  # a caption, or a bulk edit naming a few thousand photos
MAX_BULK = 5000
LOOPBACK = "127.0.0.1"
ALLOWED_HOSTS = (LOOPBACK, "localhost")  # what a browser on this machine, or at an SSH tunnel's end, sends
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")  # fmt: skip
# A file from the run folder opened on its own: shown, never run (sandbox: no scripts, its own origin).
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; sandbox"
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Text files a run folder holds that are worth reading in a browser; anything else is a download.
TEXT_FILES = {".json", ".jsonl", ".toml", ".txt", ".caption", ".log", ".csv", ".md"}


async def _reply(scope, receive, send, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)(scope, receive, send)


class Guard:
    """Before any route: a loopback Host only (a web page elsewhere pointing its own name at
    127.0.0.1, DNS rebinding, would otherwise read the page and its token), a body of at most
    ``MAX_BODY`` bytes (read here, so a huge one never reaches memory), and the security headers
    on every answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in ALLOWED_HOSTS:
            await _reply(scope, receive, send, 400, f"Host {host!r} refused: open the page as http://{LOOPBACK}:PORT/")
            return
        too_big = f"the request body is over {MAX_BODY // 1024} KiB"
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await _reply(scope, receive, send, 413, too_big)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _reply(scope, receive, send, 413, too_big)
                return

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def secured(message):
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    if k not in out:
                        out[k] = v
            await send(message)

        await self.app(scope, replay, secured)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def clean_caption(text: str) -> str:
    """One line of visible text, as sd-scripts will read it, or an ApiError saying why not.

    Control and format characters (NUL, BEL, the bidi overrides such as U+202E, zero-width
    marks) are dropped: invisible on the page, they would still reach the text encoder.
    A caption is one line (sd-scripts reads only the first), so several lines are refused
    rather than quietly joined.
    """
    text = unicodedata.normalize("NFC", text).strip()
    if any(c in text for c in "\n\r\u2028\u2029\x0b\x0c\x85"):
        raise ApiError(400, "a caption is one line (sd-scripts reads only the first line): join the lines with ', '")
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co") or c == "\t")
    text = " ".join(text.split())
    if not text:
        raise ApiError(400, "a caption cannot be empty: sd-scripts stops on an empty caption file")
    if len(text) > MAX_CAPTION_CHARS:
        raise ApiError(400, f"a caption of {len(text)} characters is far over any CLIP budget (limit {MAX_CAPTION_CHARS})")
    return text


@dataclass
class ReviewApp:
    out: Path
    cfg: Config
    counter: TokenCounter
    author: str | None = None  # who the overrides name; None: the login name
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lock: threading.Lock = field(default_factory=threading.Lock)
    toml_warning: str | None = None  # the last settle's, shown on the page until one succeeds
    thumbs: ThumbMaker = field(init=False)

    def __post_init__(self) -> None:
        # Read once: the pictures a card shows never change while the server runs.
        index = {card_id(d["key"]): sources(self.out, d) for d in raw_records(self.out)}
        self.thumbs = ThumbMaker(self.out, index, self.cfg.runtime.max_pixels)

    # --- helpers ---

    def _check_change(self, request: Request) -> None:
        """The token, and from a browser an Origin that is this page's own (a second guard)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"http://{request.headers.get('host', '')}":
            raise ApiError(403, f"Origin {origin!r} refused: changes come only from this server's own page")
        given = request.headers.get(TOKEN_HEADER, "")
        if not given or not secrets.compare_digest(given, self.token):
            raise ApiError(403, f"missing or wrong {TOKEN_HEADER} header: reload the review page")

    async def _json_body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise ApiError(400, "the request body is not JSON (or is nested too deeply)") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def _records(self, keys: list[Any]) -> list[dict[str, Any]]:
        for key in keys:
            if not isinstance(key, str):
                raise ApiError(400, "'key' (the photo's manifest key) must be a string")
        by_key = {d["key"]: d for d in raw_records(self.out)}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise ApiError(404, f"no photo {missing[0]!r} in {self.out / MANIFEST}")
        return [by_key[k] for k in keys]

    def _keys(self, body: dict[str, Any]) -> list[Any]:
        """``key`` (one photo) or ``keys`` (a selection, all changed in one step)."""
        if "keys" in body:
            keys = body["keys"]
            if not isinstance(keys, list) or not keys or len(keys) > MAX_BULK:
                raise ApiError(400, f"'keys' must be a list of 1 to {MAX_BULK} photo keys")
            return list(dict.fromkeys(keys)) if all(isinstance(k, str) for k in keys) else keys
        return [body.get("key")]

    def _settle(self) -> None:
        """Apply the overrides to the image folder and the TOMLs; remember it if the TOMLs could not follow."""
        settle(self.out, self.cfg, Manifest(self.out / MANIFEST))
        try:
            write_kohya_files(self.out, self.cfg)
        except BuilderError as exc:  # e.g. every photo rejected: nothing to train on
            self.toml_warning = f"the TOMLs were not updated: {exc}"
        else:
            self.toml_warning = None

    # --- endpoints ---

    async def index(self, request: Request) -> Response:
        html = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", self.token)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            raise ApiError(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    async def state(self, request: Request) -> Response:
        state = await run_in_threadpool(page_state, self.out, self.cfg, self.counter)
        return JSONResponse({**state, "toml_warning": self.toml_warning})

    async def thumb(self, request: Request) -> Response:
        cid, kind = request.path_params["card"], request.path_params["kind"]
        if kind not in KINDS + FULL_KINDS:
            raise ApiError(404, f"no picture kind {kind!r} (kinds: {', '.join(KINDS + FULL_KINDS)})")
        try:
            future = self.thumbs.request(cid, kind)
        except KeyError:
            raise ApiError(404, f"no {kind.split('_')[0]} picture for a photo with id {cid!r}") from None
        try:
            path = await asyncio.wrap_future(future)  # waits without holding a worker thread
        except (ImageError, ValueError, OSError) as exc:
            raise ApiError(404, f"{self.thumbs.index[cid][kind].key}: {exc}") from None
        media = BROWSER_IMAGES.get(path.suffix.lower(), "image/jpeg")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache", "Content-Security-Policy": FILE_CSP})

    async def files(self, request: Request) -> Response:
        path = self.safe_path(request.path_params["path"])
        suffix = path.suffix.lower()
        headers = {"Content-Security-Policy": FILE_CSP}
        if suffix in BROWSER_IMAGES:
            media = BROWSER_IMAGES[suffix]
        elif suffix == ".svg":  # the epoch plot: an image in <img>; opened on its own, FILE_CSP runs none of its scripts
            media = "image/svg+xml"
        elif suffix in TEXT_FILES:
            media = "text/plain; charset=utf-8"
        else:  # .html, .js and the rest: a download, never a page of this origin
            media = "application/octet-stream"
            headers["Content-Disposition"] = "attachment"
        return FileResponse(path, media_type=media, headers=headers)

    def safe_path(self, rel: str) -> Path:
        """A file inside the run folder, or an ApiError: no '..', no absolute path, no symlink out."""
        if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel or ":" in rel.split("/")[0]:
            raise ApiError(400, f"{rel!r}: only paths relative to the run folder are served")
        if any(part in ("..", ".") for part in rel.split("/")):
            raise ApiError(400, f"{rel!r}: '..' is not allowed")
        root = self.out.resolve()
        try:
            path = (root / rel).resolve(strict=True)
        except FileNotFoundError:
            raise ApiError(404, f"{rel!r}: no such file in the run folder") from None
        except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
            raise ApiError(400, f"{rel!r} cannot be opened: {getattr(exc, 'strerror', None) or exc}") from None
        if not path.is_relative_to(root):
            raise ApiError(403, f"{rel!r} leads outside the run folder")
        if not path.is_file():
            raise ApiError(404, f"{rel!r}: no such file in the run folder")
        return path

    async def set_status(self, request: Request) -> Response:
        self._check_change(request)
        body = await self._json_body(request)
        status = body.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"'status' must be {' or '.join(STATUSES)}, or null to go back to the scores' decision")
        records = self._records(self._keys(body))
        for record in records:
            if not record.get("output"):
                raise ApiError(409, f"{record['key']}: the build made no result from this photo, so there is nothing to keep")
        return await self._override([r["key"] for r in records], "status", status)

    async def set_caption(self, request: Request) -> Response:
        self._check_change(request)
        body = await self._json_body(request)
        text = body.get("caption")
        if text is not None and not isinstance(text, str):
            raise ApiError(400, "'caption' must be a string, or null to go back to the captioner's caption")
        if text is not None:
            text = clean_caption(text)
        (record,) = self._records([body.get("key")])
        if not record.get("output"):
            raise ApiError(409, f"{record['key']}: the build made no result from this photo, so it has no caption")
        return await self._override([record["key"]], "caption", text)

    async def tokens(self, request: Request) -> Response:
        self._check_change(request)
        body = await self._json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or len(text) > MAX_CAPTION_CHARS:
            raise ApiError(400, f"'text' must be a string of at most {MAX_CAPTION_CHARS} characters")
        count = await run_in_threadpool(self.counter.count, text)
        return JSONResponse(budget(count))

    async def _override(self, keys: list[str], field: str, value: str | None) -> Response:
        """Record reviewer edits and settle the run once, under the lock (one writer at a time), then
        answer with the changed cards and the summary line: all that changed on the page."""

        def apply() -> dict[str, Any]:
            with self.lock:
                for key in keys:
                    set_override(self.out, key, field, value, self.author)
                self._settle()
                return cards_answer(self.out, self.cfg, self.counter, keys)

        answer = await run_in_threadpool(apply)
        return JSONResponse({**answer, "card": answer["cards"][0], "warning": self.toml_warning})

    # --- the app ---

    def asgi(self) -> Starlette:
        async def api_error(request: Request, exc: ApiError) -> Response:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

        async def http_error(request: Request, exc: HTTPException) -> Response:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

        async def builder_error(request: Request, exc: BuilderError) -> Response:
            return JSONResponse({"error": str(exc)}, status_code=409)

        async def unexpected(request: Request, exc: Exception) -> Response:
            console.print(f"[red]review: {request.method} {request.url.path} failed: {type(exc).__name__}: {exc}[/red]")
            return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's terminal"}, status_code=500)

        routes = [
            Route("/", self.index),
            Route("/static/{name}", self.static),
            Route("/api/state", self.state),
            Route("/api/status", self.set_status, methods=["POST"]),
            Route("/api/caption", self.set_caption, methods=["POST"]),
            Route("/api/tokens", self.tokens, methods=["POST"]),
            Route("/thumb/{card}/{kind}", self.thumb),
            Route("/files/{path:path}", self.files),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(Guard)],
            exception_handlers={ApiError: api_error, HTTPException: http_error, BuilderError: builder_error, Exception: unexpected},
        )


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one). Never another address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise BuilderError(f"cannot listen on {LOOPBACK}:{port} ({getattr(exc, 'strerror', None) or exc}); pick another --port") from None
    sock.listen(64)
    return sock


class ReviewServer:
    """uvicorn serving a ReviewApp on a socket bound here, so the URL is known before it starts."""

    def __init__(self, app: ReviewApp, port: int = 0):
        import uvicorn

        self.app = app
        self.sock = bind(port)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app.asgi(), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def serve(self) -> None:
        """Blocks until Ctrl-C or ``stop()``; Ctrl-C is the normal way to stop, not an error."""
        self.app.thumbs.start()  # every thumbnail made ahead, in the background
        try:
            self.server.run(sockets=[self.sock])
        except KeyboardInterrupt:  # uvicorn shuts down, then raises the signal it caught again
            pass
        finally:
            self.app.thumbs.stop()
            self.sock.close()

    def stop(self) -> None:
        self.server.should_exit = True
