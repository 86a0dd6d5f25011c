"""Who may use the WebSocket output's port: the bind policy, the token and the browser origin.

- Loopback by default. Any other address needs an explicit opt-in and a token
  (``hop-live --ws HOST:PORT --ws-allow-remote`` with HOP_LIVE_WS_TOKEN or ``--ws-token-file``).
- With a token, a client must send it exactly once, as ``?token=...`` or ``Authorization:
  Bearer``; a request carrying several is refused whole. It is compared in constant time.
- Failed token checks are budgeted per remote address (``FailureBudget``): after a few, that
  address is refused (HTTP 429) for a backoff that doubles with each further failure.
- Browsers must come from the viewer's own origin or one listed in
  ``WebSocketOptions.allowed_origins``; on a loopback bind the Host header must be a
  loopback name too, so a DNS-rebinding page cannot pass for the viewer.
- A request that repeats Host, Origin, Upgrade or Authorization is refused whole.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict

from websockets.http11 import Request

from hop.bridges.control import is_loopback

TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9_.~-]+")  # URL-safe: travels unescaped in ?token=
MIN_TOKEN_LENGTH = 16
SINGLE_HEADERS = ("Host", "Origin", "Upgrade", "Authorization")
TOKEN_EXAMPLE = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
TOKEN_SOURCES = "HOP_LIVE_WS_TOKEN or --ws-token-file FILE"


def check_exposure(host: str, allow_remote: bool, token: str | None, allowed_origins: tuple[str, ...]) -> None:
    """Raise ValueError naming the fix for a bind that would expose the port unsafely."""
    if not is_loopback(host):
        if not allow_remote:
            raise ValueError(
                f"WebSocket host {host!r} is not a loopback address; anyone on the network could connect. "
                "Bind 127.0.0.1, or opt in with allow_remote=True (hop-live: --ws-allow-remote) and a token "
                f"({TOKEN_SOURCES}, e.g. from `{TOKEN_EXAMPLE}`)")
        if not token:
            raise ValueError(
                f"binding WebSocket host {host!r} requires a token (hop-live: {TOKEN_SOURCES}); "
                "clients then connect with ?token=...")
    if token is not None:
        check_token(token)
    for origin in allowed_origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"allowed origin {origin!r} must look like http://host[:port], without a path")


def check_token(token: str) -> None:
    """ValueError unless ``token`` can be a token; the message never repeats the token."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"WebSocket token is too short: use at least {MIN_TOKEN_LENGTH} characters, "
                         "e.g. secrets.token_urlsafe(24)")
    if not TOKEN_CHARACTERS.fullmatch(token):
        raise ValueError("WebSocket token may only contain URL-safe characters [A-Za-z0-9_.~-]")


def repeated_header(request: Request) -> str | None:
    """The first of the headers that must appear at most once and appears more often, if any."""
    for name in SINGLE_HEADERS:
        if len(request.headers.get_all(name)) > 1:
            return name
    return None


def offered_tokens(request: Request, params: dict[str, list[str]]) -> list[str]:
    """Every token the request offers: each ``token=`` of the query, and a Bearer header."""
    offered = list(params.get("token", []))
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        offered.append(authorization.removeprefix("Bearer "))
    return offered


def token_ok(request: Request, params: dict[str, list[str]], token: str) -> bool:
    """True only for exactly one offered token, equal to ``token`` (several are never tried in turn)."""
    offered = offered_tokens(request, params)
    if len(offered) != 1:
        return False
    return hmac.compare_digest(offered[0].encode("utf-8", "surrogatepass"), token.encode())


class FailureBudget:
    """Failed token checks per remote address, with backoff.

    An address may fail ``allowed`` times; then it is refused outright for ``backoff_s``,
    doubling with each further failure up to ``max_backoff_s``. A success clears its record;
    so does ``forget_after_s`` without a failure. At most ``max_addresses`` are remembered
    (the least recently failing is forgotten first), so memory stays bounded whatever the
    number of addresses.
    """

    def __init__(self, allowed: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 300.0,
                 forget_after_s: float = 900.0, max_addresses: int = 4096, clock=time.monotonic):
        if allowed < 1 or not backoff_s > 0 or max_backoff_s < backoff_s:
            raise ValueError("FailureBudget needs allowed >= 1 and 0 < backoff_s <= max_backoff_s")
        self.allowed = allowed
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.forget_after_s = forget_after_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._records: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # failures, last, blocked until

    def blocked_for(self, address: str) -> float:
        """Seconds this address must still wait; 0 when it may try."""
        record = self._current(address)
        return max(0.0, record[2] - self._clock()) if record else 0.0

    def failed(self, address: str) -> None:
        failures, _, until = self._current(address) or (0, 0.0, 0.0)
        now = self._clock()
        failures += 1
        if failures >= self.allowed:
            until = now + min(self.max_backoff_s, self.backoff_s * 2 ** (failures - self.allowed))
        self._records[address] = (failures, now, until)
        self._records.move_to_end(address)
        while len(self._records) > self.max_addresses:
            self._records.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)

    def _current(self, address: str) -> tuple[int, float, float] | None:
        record = self._records.get(address)
        if record is not None and self._clock() - record[1] > self.forget_after_s and self._clock() >= record[2]:
            del self._records[address]
            return None
        return record


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
