"""The explorer's web app: one plain page (static/: HTML, vanilla JS, CSS; nothing fetched from
elsewhere) and a small JSON API over an `Explorer` (src/explorer/session.py), served by Starlette.

Routes: GET / (the page), /static/* (its files), /api/meta, /api/map, /api/browse, /image/<row>
(a database picture by row id: no path is ever taken from a request), POST /api/upload (the raw
picture as the body, size-limited while it is read) and /api/search (one interaction). A bad
request gets a 4xx with a one-line {"error": ...} the page shows; the server keeps running.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path, PurePath
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from src.errors import SuiteError
from src.explorer.session import MAX_UPLOAD_BYTES, Explorer

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# The page may load nothing from elsewhere: it works offline, and a hostile upload name or tag
# cannot pull in a script.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def refuse(message: str, status: int = 400) -> JSONResponse:
    """A request the explorer cannot answer: its one line, for the page to show."""
    return JSONResponse({"error": message}, status_code=status)


def create_app(explorer: Explorer, allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> Starlette:
    """The app over `explorer`. allowed_hosts: Host headers answered (loopback names by default,
    so a web page elsewhere cannot reach a local explorer by DNS rebinding); ["*"] for any."""

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
            return refuse("browse: offset and class filters must be integers")
        try:
            return JSONResponse(explorer.browse(filters, offset))
        except SuiteError as e:
            return refuse(str(e))

    async def image(request: Request) -> Response:
        try:
            path = explorer.picture(request.path_params["row"])
        except SuiteError as e:
            return refuse(str(e), 404)
        return FileResponse(path, headers={"Cache-Control": "max-age=3600", **PAGE_HEADERS})

    async def upload(request: Request) -> Response:
        name = PurePath(unquote(request.headers.get("x-filename", "upload"))).name[:100]
        name = name or "upload"
        too_big = f"{name} is larger than {MAX_UPLOAD_BYTES >> 20} MiB: resize it"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return refuse(too_big, 413)
        data = bytearray()
        async for chunk in request.stream():  # counted as it arrives: never more in memory
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                return refuse(too_big, 413)
        if not data:
            return refuse("the upload is empty: choose a PNG, JPEG or WebP picture")
        try:
            return JSONResponse(await run_in_threadpool(explorer.upload, bytes(data), name))
        except SuiteError as e:
            return refuse(str(e))

    async def search(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return refuse("the request is not JSON")
        try:
            answer = await run_in_threadpool(explorer.answer, explorer.ask(body))
        except SuiteError as e:
            return refuse(str(e))
        return JSONResponse(dataclasses.asdict(answer))

    routes = [
        Route("/", page),
        Route("/api/meta", meta),
        Route("/api/map", map_points),
        Route("/api/browse", browse),
        Route("/image/{row:int}", image),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/search", search, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    return Starlette(routes=routes, middleware=middleware)
