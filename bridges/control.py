"""Control input shared by every way in (WebSocket JSON, OSC): one schema, no side effects.

A control message sets one or more of
    style      a style name: 1-32 of [A-Za-z0-9_-], one of the offered ones when a list is given
    intensity  a number in [0, 3] (0 rest, 1 as generated; hop.profiles.INTENSITY_RANGE)
    mute       true / false
and nothing else. Parsers for each wire format turn their bytes into a field dict and
hand it to ``check_fields``, which either returns a ``Control`` or raises
``ControlError`` with a code and a sentence saying what to send instead.
``RateLimit`` and ``is_loopback`` are the limits every input applies the same way.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from dataclasses import dataclass

from hop.profiles import INTENSITY_RANGE

CONTROL_FIELDS = ("style", "intensity", "mute")
STYLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class Control:
    """One validated control message; fields left None were not in the message."""
    style: str | None = None
    intensity: float | None = None
    mute: bool | None = None


class ControlError(ValueError):
    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def check_fields(fields: dict, styles: tuple[str, ...] = ()) -> Control:
    """Validate the fields of one message (wire format already decoded)."""
    unknown = sorted(set(fields) - set(CONTROL_FIELDS))
    if unknown:
        raise ControlError("bad_schema", f"unknown field(s) {unknown}; allowed: {list(CONTROL_FIELDS)}")
    if not fields:
        raise ControlError("bad_schema", f"give at least one of {list(CONTROL_FIELDS)}")
    style = fields.get("style")
    if "style" in fields:
        if not isinstance(style, str) or not STYLE_NAME.fullmatch(style):
            raise ControlError("bad_value", f'"style" must be a name matching {STYLE_NAME.pattern}')
        if styles and style not in styles:
            raise ControlError("bad_value", f'unknown style {style!r}; choose one of {list(styles)}')
    intensity = fields.get("intensity")
    if "intensity" in fields:
        # bool is an int in Python; true/false is not an intensity. Compare before
        # converting: a 400-digit integer is a valid JSON number but overflows a float.
        if isinstance(intensity, bool) or not isinstance(intensity, (int, float)) \
                or not INTENSITY_RANGE[0] <= intensity <= INTENSITY_RANGE[1] or math.isnan(intensity):
            raise ControlError("bad_value", f'"intensity" must be a number in {list(INTENSITY_RANGE)}')
        intensity = float(intensity)
    mute = fields.get("mute")
    if "mute" in fields and not isinstance(mute, bool):
        raise ControlError("bad_value", '"mute" must be true or false')
    return Control(style=style, intensity=intensity, mute=mute)


class RateLimit:
    """Token bucket: ``rate_hz`` messages per second sustained, bursts of the same size."""

    def __init__(self, rate_hz: float):
        self.rate = rate_hz
        self.tokens = rate_hz
        self.last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps an input reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
