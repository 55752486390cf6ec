"""The explorer's web app: one plain page (static/: HTML, vanilla JS, CSS; nothing fetched from
elsewhere) and a small JSON API over an `Explorer` (src/explorer/session.py), served by Starlette.

Routes: GET / (the page), /static/* (its files), /api/meta, /api/map, /api/browse, /image/<row>
(a database picture by row id: no path is ever taken from a request), POST /api/upload (the raw
picture as the body, sent as an image type, size-limited while it is read, a few at a time) and
/api/search (one interaction as application/json, size-limited). A POST from a page of another
origin is refused, and so is a body of a type an HTML form can send: any web page the user visits
could otherwise drive the explorer. A bad request gets a 4xx with a one-line {"error": ...} the
page shows; the server keeps running and no answer names a path of the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePath
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from src.errors import SuiteError
from src.explorer.searchers import SearchFailed
from src.explorer.session import MAX_UPLOAD_BYTES, Explorer

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# The page may load nothing from elsewhere: it works offline, and a hostile upload name or tag
# cannot pull in a script. Its pictures are for its own page only.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MAX_SEARCH_BYTES = 64 * 2**10  # a search is a few hundred bytes of JSON: a larger body is refused
UPLOADS_AT_ONCE = 4  # uploads read and waiting to be decoded at once; later ones wait their turn
BODY_SECONDS = 60.0  # a body must arrive within this: a trickling client gives its place back
# Content types a cross-site HTML form (or a no-cors fetch) can send; none is accepted.
SEARCH_TYPE = "application/json"
UPLOAD_TYPES = "an image type (image/png, image/jpeg or image/webp)"


class Refusal(SuiteError):
    """A request refused with its HTTP status and one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def refuse(message: str, status: int = 400) -> JSONResponse:
    """A request the explorer cannot answer: its one line, for the page to show."""
    return JSONResponse({"error": message}, status_code=status)


def own_origin(origin: str, host: str) -> bool:
    """Whether a request's Origin header names this server as the request's Host reached it."""
    try:
        o, h = urlsplit(origin), urlsplit(f"//{host}")
        return o.scheme == "http" and (o.hostname, o.port or 80) == (h.hostname, h.port or 80)
    except ValueError:  # a port that is no number
        return False


class SameOriginPosts:
    """Refuse a POST sent by a page of another origin (browsers name theirs in Origin on every
    POST). A request without an Origin is no browser's cross-site request (curl, a script)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not own_origin(origin, headers.get("host", "")):
                shown = origin[:100].encode("ascii", "replace").decode()
                answer = refuse(f"refused: a page of {shown} may not use this explorer", 403)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int, too_big: str) -> bytes:
    """The request's body, counted as it arrives (never more than `limit` bytes in memory), within
    BODY_SECONDS."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Refusal(too_big, 413)
    data = bytearray()
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    raise Refusal(too_big, 413)
    except TimeoutError:
        late = f"the request's body took longer than {BODY_SECONDS:g} s: send it again"
        raise Refusal(late, 408) from None
    return bytes(data)


def parse_search(data: bytes) -> object:
    """The search's JSON; any malformed body (not UTF-8, not JSON, an integer of more digits than
    Python parses, nesting deeper than its recursion limit) is one line."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Refusal("the request is not JSON (or not JSON this explorer reads)") from None


def upload_name(request: Request) -> str:
    """The picture's name from X-Filename, for messages only: no folder, printable, ≤ 100 chars."""
    name = PurePath(unquote(request.headers.get("x-filename", "upload"))).name
    return "".join(c for c in name if c.isprintable())[:100] or "upload"


def server_folders(explorer: Explorer) -> list[str]:
    """The folders above the run's roots (data, weights, the pictures), resolved or as given,
    longest first: what a message drops so it names a file from the root the user named on."""
    s = explorer.space
    roots = {
        f for r in (s.data_root, s.weights.parent, explorer.image_root) for f in (r, r.resolve())
    }
    above = {r.parent for r in roots if r.is_absolute() and r.parent != Path(r.anchor)}
    return sorted((f"{p}{os.sep}" for p in above), key=len, reverse=True)


def unpathed(message: str, folders: Sequence[str]) -> str:
    """`message` without the server's folders: /home/u/suite/weights/r/x.pt reads weights/r/x.pt."""
    for folder in folders:
        message = message.replace(folder, "")
    return message


def create_app(explorer: Explorer, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> Starlette:
    """The app over `explorer`. allowed_hosts: Host headers answered (loopback names by default,
    so a web page elsewhere cannot reach a local explorer by DNS rebinding); ["*"] for any."""
    uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def meta(request: Request) -> Response:
        return JSONResponse(explorer.meta())

    async def map_points(request: Request) -> Response:
        return JSONResponse(explorer.map_points())

    async def browse(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            offset = int(params.pop("offset", "0"))
            filters = {a: int(c) for a, c in params.items() if c != ""}
        except ValueError:
            raise Refusal("browse: offset and class filters must be integers") from None
        return JSONResponse(explorer.browse(filters, offset))

    async def image(request: Request) -> Response:
        row = request.path_params["row"]
        if not (row.isascii() and row.isdigit() and len(row) < 19):  # no int() of 5000 digits
            raise Refusal(f"no database row {row[:20]}", 404)
        try:
            path = explorer.picture(int(row))
        except SuiteError as e:
            raise Refusal(str(e), 404) from None
        return FileResponse(path, headers={"Cache-Control": "max-age=3600", **PAGE_HEADERS})

    async def upload(request: Request) -> Response:
        name = upload_name(request)
        if not media_type(request).startswith("image/"):
            raise Refusal(f"{name}: send the picture as {UPLOAD_TYPES}", 415)
        too_big = f"{name} is larger than {MAX_UPLOAD_BYTES >> 20} MiB: resize it"
        async with uploads:  # bodies in memory and pictures waiting for the decoder: bounded
            data = await read_body(request, MAX_UPLOAD_BYTES, too_big)
            if not data:
                raise Refusal("the upload is empty: choose a PNG, JPEG or WebP picture")
            return JSONResponse(await asyncio.wrap_future(explorer.submit_upload(data, name)))

    async def search(request: Request) -> Response:
        if media_type(request) != SEARCH_TYPE:
            raise Refusal(f"a search is sent as {SEARCH_TYPE}", 415)
        too_big = f"a search request is larger than {MAX_SEARCH_BYTES >> 10} KiB"
        body = parse_search(await read_body(request, MAX_SEARCH_BYTES, too_big))
        answer = await asyncio.wrap_future(explorer.submit_answer(explorer.ask(body)))
        return Response(answer, media_type="application/json")

    hidden = server_folders(explorer)

    async def refused(request: Request, e: Exception) -> Response:
        return refuse(unpathed(str(e), hidden), getattr(e, "status", 400))

    async def client_left(request: Request, e: Exception) -> Response:
        log.info("E3: a client left before its request was read (%s)", request.url.path)
        return Response(status_code=400)  # nobody reads it

    async def failed(request: Request, e: Exception) -> Response:
        # the traceback goes to the server's log (uvicorn's or the search process's), the page
        # gets one line
        what = str(e) if isinstance(e, SearchFailed) else type(e).__name__
        return refuse(f"the explorer failed on this request ({what})", 500)

    routes = [
        Route("/", page),
        Route("/api/meta", meta),
        Route("/api/map", map_points),
        Route("/api/browse", browse),
        Route("/image/{row}", image),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/search", search, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
        Middleware(SameOriginPosts),
    ]
    handlers = {SuiteError: refused, ClientDisconnect: client_left, Exception: failed}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
