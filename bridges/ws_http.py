"""Plain HTTP on the WebSocket output's port: the bundled browser viewer's files.

``GET /``, ``/index.html``, ``/viewer.js`` ... serve bridges/viewer/static. The files
are read into a fixed table at start-up, so a request can only ever name a file
that is in the table: no request path is ever joined onto a folder. GET is the
only method: any other (HEAD, OPTIONS, POST, ...) gets 405 with ``Allow: GET``.
"""

from __future__ import annotations

import http
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Response

VIEWER_DIR = Path(__file__).parent / "viewer" / "static"
REQUIRED = ("index.html", "viewer.js")
NOT_SERVED = (".source-sha256",)  # build bookkeeping beside the bundle, not part of the viewer

# Scripts and styles only from the server itself; blob:/data: for a VRM the user drops in.
CONTENT_SECURITY_POLICY = ("default-src 'self' blob: data:; connect-src 'self' blob: data:; "
                           "img-src 'self' blob: data:; style-src 'self'; object-src 'none'; base-uri 'none'")


@dataclass(frozen=True)
class StaticFile:
    content_type: str
    body: bytes


def load_static_files(folder: Path = VIEWER_DIR) -> dict[str, StaticFile]:
    """URL path -> file, for every file under ``folder``; "/" is index.html."""
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"viewer files {missing} missing in {folder}: restore bridges/viewer/static from git (viewer.js is "
            "built there by `npm ci && node build.mjs` in bridges/viewer), or turn the viewer off with "
            "WebSocketOptions(serve_viewer=False)")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(NOT_SERVED):
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or content_type.endswith("javascript"):
                content_type += "; charset=utf-8"
            files["/" + path.relative_to(folder).as_posix()] = StaticFile(content_type, path.read_bytes())
    files["/"] = files["/index.html"]
    return files


def static_response(files: dict[str, StaticFile], path: str) -> Response:
    found = files.get(path)
    if found is None:
        return text_response(http.HTTPStatus.NOT_FOUND, "not found\n")
    headers = Headers({
        "Content-Type": found.content_type,
        "Content-Length": str(len(found.body)),
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Connection": "close",
    })
    return Response(200, "OK", headers, found.body)


def method_not_allowed(method: str) -> Response:
    """405 for anything but GET; no body for HEAD (a HEAD response never has one)."""
    response = text_response(http.HTTPStatus.METHOD_NOT_ALLOWED, "" if method == "HEAD" else
                             "only GET is served here\n")
    response.headers["Allow"] = "GET"
    return response


def text_response(status: http.HTTPStatus, text: str) -> Response:
    body = text.encode()
    headers = Headers({"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                       "Connection": "close"})
    return Response(status.value, status.phrase, headers, body)
