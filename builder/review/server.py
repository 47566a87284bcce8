"""The review server: Starlette on 127.0.0.1 only, serving the page, the run folder's files
and a small JSON API.

Safety, because the page can change a training set:
- it binds to loopback only and accepts only a loopback Host header (no DNS rebinding);
- files come from the run folder only: no ``..``, no absolute paths, no symlink leading out;
  donor photos (outside it) are reached only as thumbnails the server made;
- every change needs the per-server token the page carries (header ``X-Review-Token``);
- a bad request gets a 4xx JSON ``{"error": ...}``, an unexpected failure a 500 JSON, never
  a traceback page;
- changes are serialised by one lock: an override and the settle after it are one step,
  and each override touches only its own field, so two tabs never lose an edit.
"""

from __future__ import annotations

import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
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
from builder.review.cards import budget, build_card, card_id, page_state, raw_records
from builder.review.thumbs import KINDS, thumbnail

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css"}
TOKEN_HEADER = "X-Review-Token"
MAX_CAPTION_CHARS = 4000
LOOPBACK = "127.0.0.1"
ALLOWED_HOSTS = (LOOPBACK, "localhost")  # what a browser on this machine, or at an SSH tunnel's end, sends


class LoopbackHostOnly:
    """Refuse a request whose Host header is not loopback: a web page elsewhere that points
    its own name at 127.0.0.1 (DNS rebinding) would otherwise read the page and its token."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in ALLOWED_HOSTS:
                response = JSONResponse({"error": f"Host {host!r} refused: open the page as http://{LOOPBACK}:PORT/"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ReviewApp:
    out: Path
    cfg: Config
    counter: TokenCounter
    author: str | None = None  # who the overrides name; None: the login name
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- helpers ---

    def _check_token(self, request: Request) -> None:
        given = request.headers.get(TOKEN_HEADER, "")
        if not given or not secrets.compare_digest(given, self.token):
            raise ApiError(403, f"missing or wrong {TOKEN_HEADER} header: reload the review page")

    async def _json_body(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def _record(self, key: Any) -> dict[str, Any]:
        if not isinstance(key, str):
            raise ApiError(400, "'key' (the photo's manifest key) must be a string")
        for d in raw_records(self.out):
            if d["key"] == key:
                return d
        raise ApiError(404, f"no photo {key!r} in {self.out / MANIFEST}")

    def _settle(self) -> str | None:
        """Apply the overrides to the image folder and the TOMLs; a warning if the TOMLs could not follow."""
        settle(self.out, self.cfg, Manifest(self.out / MANIFEST))
        try:
            write_kohya_files(self.out, self.cfg)
        except BuilderError as exc:  # e.g. every photo rejected: nothing to train on
            return f"the TOMLs were not updated: {exc}"
        return None

    def _card(self, key: str) -> dict[str, Any]:
        from builder.overrides import load_overrides

        return build_card(self.out, self.cfg, self._record(key), load_overrides(self.out), self.counter)

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
        return JSONResponse(await run_in_threadpool(page_state, self.out, self.cfg, self.counter))

    async def thumb(self, request: Request) -> Response:
        cid, kind = request.path_params["card"], request.path_params["kind"]
        if kind not in KINDS:
            raise ApiError(404, f"no thumbnail kind {kind!r} (kinds: {', '.join(KINDS)})")
        record = next((d for d in raw_records(self.out) if card_id(d["key"]) == cid), None)
        if record is None:
            raise ApiError(404, f"no photo with id {cid!r}")
        picture = self.out / record["output"] if kind.startswith("result") and record.get("output") else None
        if kind.startswith("donor"):
            picture = Path(record["input"])
        if picture is None or not picture.is_file():
            raise ApiError(404, f"{record['key']}: no {kind.split('_')[0]} picture")
        box = (record.get("face") or {}).get("box")
        try:
            path = await run_in_threadpool(thumbnail, self.out, cid, kind, picture, box, self.cfg.runtime.max_pixels)
        except (ImageError, ValueError) as exc:
            raise ApiError(404, f"{record['key']}: {exc}") from None
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    async def files(self, request: Request) -> Response:
        return FileResponse(self.safe_path(request.path_params["path"]))

    def safe_path(self, rel: str) -> Path:
        """A file inside the run folder, or an ApiError: no '..', no absolute path, no symlink out."""
        if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel or ":" in rel.split("/")[0]:
            raise ApiError(400, f"{rel!r}: only paths relative to the run folder are served")
        if any(part in ("..", ".") for part in rel.split("/")):
            raise ApiError(400, f"{rel!r}: '..' is not allowed")
        root = self.out.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise ApiError(403, f"{rel!r} leads outside the run folder")
        if not path.is_file():
            raise ApiError(404, f"{rel!r}: no such file in the run folder")
        return path

    async def set_status(self, request: Request) -> Response:
        self._check_token(request)
        body = await self._json_body(request)
        status = body.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"'status' must be {' or '.join(STATUSES)}, or null to go back to the scores' decision")
        record = self._record(body.get("key"))
        if not record.get("output"):
            raise ApiError(409, f"{record['key']}: the build made no result from this photo, so there is nothing to keep")
        return await self._override(record["key"], "status", status)

    async def set_caption(self, request: Request) -> Response:
        self._check_token(request)
        body = await self._json_body(request)
        text = body.get("caption")
        if text is not None and not isinstance(text, str):
            raise ApiError(400, "'caption' must be a string, or null to drop the edit")
        if text is not None:
            # sd-scripts reads a caption's first line only, and stops on an empty file.
            text = " ".join(text.split())
            if not text:
                raise ApiError(400, "a caption cannot be empty: sd-scripts stops on an empty caption file")
            if len(text) > MAX_CAPTION_CHARS:
                raise ApiError(400, f"a caption of {len(text)} characters is far over any CLIP budget (limit {MAX_CAPTION_CHARS})")
        record = self._record(body.get("key"))
        if not record.get("output"):
            raise ApiError(409, f"{record['key']}: the build made no result from this photo, so it has no caption")
        return await self._override(record["key"], "caption", text)

    async def tokens(self, request: Request) -> Response:
        self._check_token(request)
        body = await self._json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or len(text) > MAX_CAPTION_CHARS:
            raise ApiError(400, f"'text' must be a string of at most {MAX_CAPTION_CHARS} characters")
        count = await run_in_threadpool(self.counter.count, text)
        return JSONResponse(budget(count))

    async def _override(self, key: str, field: str, value: str | None) -> Response:
        """Record one reviewer edit and settle the run under the lock (one writer at a time), then answer."""

        def apply() -> str | None:
            with self.lock:
                set_override(self.out, key, field, value, self.author)
                return self._settle()

        warning = await run_in_threadpool(apply)
        return await self._answer(key, warning)

    async def _answer(self, key: str, warning: str | None) -> Response:
        state = await run_in_threadpool(page_state, self.out, self.cfg, self.counter)
        card = next(c for c in state["cards"] if c["key"] == key)
        return JSONResponse({"card": card, "tally": state["tally"], "image_folder": state["image_folder"], "warning": warning})

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
            middleware=[Middleware(LoopbackHostOnly)],
            exception_handlers={ApiError: api_error, HTTPException: http_error, BuilderError: builder_error, Exception: unexpected},
        )


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: a free one). Never another address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as exc:
        sock.close()
        raise BuilderError(f"cannot listen on {LOOPBACK}:{port} ({exc.strerror or exc}); pick another --port") from None
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
        try:
            self.server.run(sockets=[self.sock])
        except KeyboardInterrupt:  # uvicorn shuts down, then raises the signal it caught again
            pass
        finally:
            self.sock.close()

    def stop(self) -> None:
        self.server.should_exit = True
