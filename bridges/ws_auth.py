"""Who may use the WebSocket output's port: the bind policy, the token and the browser origin.

- Loopback by default. Any other address needs an explicit opt-in and a token
  (``hop-live --ws HOST:PORT --ws-allow-remote --ws-token TOKEN``).
- With a token, a client must send it as ``?token=...`` or ``Authorization: Bearer``;
  it is compared in constant time.
- Browsers must come from the viewer's own origin or one listed in
  ``WebSocketOptions.allowed_origins``; on a loopback bind the Host header must be a
  loopback name too, so a DNS-rebinding page cannot pass for the viewer.
- A request that repeats Host, Origin, Upgrade or Authorization is refused whole.
"""

from __future__ import annotations

import hmac
import re

from websockets.http11 import Request

from hop.bridges.control import is_loopback

TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9_.~-]+")  # URL-safe: travels unescaped in ?token=
MIN_TOKEN_LENGTH = 16
SINGLE_HEADERS = ("Host", "Origin", "Upgrade", "Authorization")
TOKEN_EXAMPLE = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def check_exposure(host: str, allow_remote: bool, token: str | None, allowed_origins: tuple[str, ...]) -> None:
    """Raise ValueError naming the fix for a bind that would expose the port unsafely."""
    if not is_loopback(host):
        if not allow_remote:
            raise ValueError(
                f"WebSocket host {host!r} is not a loopback address; anyone on the network could connect. "
                "Bind 127.0.0.1, or opt in with allow_remote=True (hop-live: --ws-allow-remote) and a token "
                f"(--ws-token or HOP_LIVE_WS_TOKEN, e.g. from `{TOKEN_EXAMPLE}`)")
        if not token:
            raise ValueError(
                f"binding WebSocket host {host!r} requires a token (hop-live: --ws-token or HOP_LIVE_WS_TOKEN); "
                "clients then connect with ?token=...")
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"WebSocket token is too short: use at least {MIN_TOKEN_LENGTH} characters, "
                         "e.g. secrets.token_urlsafe(24)")
    if token is not None and not TOKEN_CHARACTERS.fullmatch(token):
        raise ValueError("WebSocket token may only contain URL-safe characters [A-Za-z0-9_.~-]")
    for origin in allowed_origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"allowed origin {origin!r} must look like http://host[:port], without a path")


def repeated_header(request: Request) -> str | None:
    """The first of the headers that must appear at most once and appears more often, if any."""
    for name in SINGLE_HEADERS:
        if len(request.headers.get_all(name)) > 1:
            return name
    return None


def token_ok(request: Request, params: dict[str, list[str]], token: str) -> bool:
    offered = params.get("token", [])
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        offered = [*offered, authorization.removeprefix("Bearer ")]
    expected = token.encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)


def origin_ok(request: Request, bind_host: str, allowed_origins: tuple[str, ...]) -> bool:
    """Allow non-browser clients (no Origin), configured origins and same-origin viewer pages.

    Same-origin means Origin == http://<Host header>. On a loopback bind the
    Host must also be a loopback name, or a DNS-rebinding page (evil.example
    resolved to 127.0.0.1) would count as same-origin; on a remote bind the
    token already guards the door.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin in allowed_origins:
        return True
    host = request.headers.get("Host", "")
    if origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
        return False
    if not is_loopback(bind_host):
        return True
    host_name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return is_loopback(host_name)
