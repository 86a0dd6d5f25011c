"""Control input over WebSocket: JSON text messages on the WebSocket output's connections.

A client sends ``{"type": "control", ...}`` with one or more of "style", "intensity",
"mute" (the shared schema, hop.bridges.control) and gets one reply per message:
``{"type": "accepted", "control": {...}}`` or ``{"type": "error", "error": CODE,
"detail": "what to send instead"}``. Binary messages, messages over ``max_bytes``
and more than ``rate_hz`` messages a second from one client are rejected too.

``WebSocketControl`` does the checking for every connection of one server and
hands each valid ``Control`` to the callback it was given; it knows nothing of
what receives the controls, and nothing of sockets: the server passes it each
message and sends back the reply it returns. The reply tells the truth: "accepted"
only once the callback took the control; a callback that cannot apply it raises
ControlError (hop-live's session: a style its model has no such speaker for, ...)
and the client gets that error and its reason instead.
"""

from __future__ import annotations

import json
from typing import Callable

from hop.bridges.control import STYLE_NAME, Control, ControlError, RateLimit, check_fields
from hop.profiles import INTENSITY_RANGE

CONTROL_EXAMPLE = '{"type": "control", "intensity": 0.8}'


def parse_control(text: str, styles: tuple[str, ...] = ()) -> Control:
    """Parse one control message or raise ControlError saying what to send instead.

    Schema: a JSON object with "type": "control" and one or more of
    "style" (name), "intensity" (number in [0, 2]), "mute" (true/false); nothing else.
    """
    try:
        message = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (ValueError, RecursionError) as error:
        raise ControlError("bad_json", f"not valid JSON ({error}); send e.g. {CONTROL_EXAMPLE}") from None
    if not isinstance(message, dict):
        raise ControlError("bad_schema", f"expected a JSON object such as {CONTROL_EXAMPLE}")
    if message.get("type") != "control":
        raise ControlError("bad_schema", 'the "type" field must be "control"')
    return check_fields({k: v for k, v in message.items() if k != "type"}, styles)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys")
    return dict(pairs)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def check_limits(max_bytes: int, rate_hz: float, styles: tuple[str, ...]) -> None:
    """Raise ValueError for limits the input cannot work with."""
    if max_bytes < 64:
        raise ValueError("max_control_bytes must be at least 64")
    if not rate_hz > 0:
        raise ValueError("control_rate_hz must be positive")
    for style in styles:
        if not STYLE_NAME.fullmatch(style):
            raise ValueError(f"style name {style!r} must match {STYLE_NAME.pattern}")


class WebSocketControl:
    """Validates control messages from every client of one server; valid ones go to the callback.

    ``handle`` runs on the server's thread, and so does the callback: keep it short
    and thread-safe. A ControlError from the callback rejects the message with its
    code and reason (the receiver checked it and cannot apply it); any other exception
    is passed to ``on_error`` and the message is rejected as "internal".
    """

    def __init__(self, max_bytes: int, rate_hz: float, styles: tuple[str, ...] = (),
                 on_error: Callable[[str], None] = lambda message: None):
        check_limits(max_bytes, rate_hz, styles)
        self.max_bytes = max_bytes
        self.rate_hz = rate_hz
        self.styles = styles
        self._on_error = on_error
        self._callback: Callable[[Control], None] | None = None
        self.accepted = 0
        self.rejected = 0

    def on_control(self, callback: Callable[[Control], None] | None) -> None:
        self._callback = callback

    def describe(self) -> dict:
        """The limits, as the hello message announces them to each client."""
        return {"maxBytes": self.max_bytes, "ratePerSecond": self.rate_hz, "styles": list(self.styles),
                "intensity": list(INTENSITY_RANGE)}

    def new_client(self) -> RateLimit:
        """The per-client state: its rate limit, passed back to ``handle`` with each of its messages."""
        return RateLimit(self.rate_hz)

    def handle(self, message: str | bytes, limiter: RateLimit) -> tuple[bool, dict]:
        """One message from one client -> (accepted, the reply to send it)."""
        try:
            control = self._check(message, limiter)
            callback = self._callback
            if callback is not None:
                callback(control)  # the receiver's own check: ControlError if it cannot apply it
        except ControlError as error:
            self._count(False)
            return False, {"type": "error", "error": error.code, "detail": error.detail}
        except Exception as error:  # a bug in validation or in the callback must not drop the client or the server
            self._on_error(f"control message check failed: {error!r}")
            self._count(False)
            return False, {"type": "error", "error": "internal", "detail": "message could not be applied"}
        self._count(True)
        return True, {"type": "accepted", "control": {k: v for k, v in vars(control).items() if v is not None}}

    def _check(self, message: str | bytes, limiter: RateLimit) -> Control:
        if not limiter.allow():
            raise ControlError("rate_limited", f"at most {self.rate_hz:g} control messages per second")
        if isinstance(message, bytes):
            raise ControlError("binary", f"control messages are JSON text, e.g. {CONTROL_EXAMPLE}")
        if len(message) > self.max_bytes or len(message.encode("utf-8", "surrogatepass")) > self.max_bytes:
            raise ControlError("too_large", f"control messages are limited to {self.max_bytes} bytes")
        return parse_control(message, self.styles)

    def _count(self, accepted: bool) -> None:
        if accepted:
            self.accepted += 1
        else:
            self.rejected += 1
