"""Control input over OSC (`hop-live --osc-control [HOST:]PORT`): style, intensity, mute from
TouchOSC, a lighting desk, Max/MSP or a show-control script.

One OSC message per datagram, one argument each:

    /hop/control/intensity  f|i      0 .. 3 (0 rest, 1 as generated)
    /hop/control/mute       T|F, i 0|1, f 0.0|1.0   (toggles of most OSC apps send floats)
    /hop/control/style      s        a style name the engine offers, e.g. "speaker_3"

Everything else is rejected and counted: bundles, other addresses, other argument
types or counts, values out of range, datagrams over ``max_bytes``, more than
``rate_hz`` messages a second from one sender (one sending socket: host and port, so a
flooding process on this machine never uses up another's allowance), any datagram that
is not the canonical OSC encoding of the message it decodes to (trailing bytes, bad
padding), and controls the receiver cannot apply (its callback raises ControlError:
a style the model does not have).
OSC has no authentication, so the server binds loopback only; reach it from another
machine through a tunnel (ssh -L, socat) that you control.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable

from pythonosc.osc_message import OscMessage

from hop.bridges.control import Control, ControlError, RateLimit, check_fields, is_loopback
from hop.bridges.osc_wire import osc_message
from hop.profiles import RANGES

ADDRESSES = {"/hop/control/intensity": "intensity", "/hop/control/mute": "mute", "/hop/control/style": "style"}
MAX_SENDERS = 256  # rate-limit buckets kept (one per sending socket); the least recently heard is forgotten first


@dataclass(frozen=True)
class OscControlOptions:
    host: str = "127.0.0.1"
    port: int = 9001  # 0 picks a free port (read it back from OscControlServer.port)
    max_bytes: int = 256
    rate_hz: float = 20.0  # sustained messages per second per sender (bursts of the same size)


def parse_osc_control(datagram: bytes, styles: tuple[str, ...] = ()) -> Control:
    """One control datagram -> Control, or ControlError saying what to send instead."""
    if datagram.startswith(b"#bundle"):
        raise ControlError("bundle", "send single OSC messages, not bundles")
    # Type tags are checked before python-osc reads the datagram: it would log a warning
    # for every unknown tag, and a hostile sender could fill the log that way.
    types = _type_tags(datagram)
    if types is None:
        raise ControlError("bad_osc", "not an OSC message (no address and type tag strings)")
    if len(types) != 1:
        raise ControlError("bad_args", "a control message takes exactly one argument")
    if types not in "ifsTF":
        raise ControlError("bad_value", f"argument type {types!r} is not one of i, f, s, T, F")
    try:
        message = OscMessage(datagram)
        address, params = message.address, list(message.params)
    except Exception as error:  # python-osc raises several types on malformed bytes
        raise ControlError("bad_osc", f"not an OSC message ({type(error).__name__})") from None
    field = ADDRESSES.get(address)
    if field is None:
        raise ControlError("bad_address", f"unknown address {address[:64]!r}; use one of {sorted(ADDRESSES)}")
    if len(params) != 1:
        raise ControlError("bad_args", f"{address} takes exactly one argument")
    if not _canonical(datagram, address, types, params):
        raise ControlError("bad_osc", "not a canonically encoded OSC message (padding or trailing bytes)")
    value, tag = params[0], types
    if field == "mute":
        if tag in "TF":
            value = tag == "T"
        elif tag in "if" and value in (0, 1):
            value = bool(value)
        else:
            raise ControlError("bad_value", "/hop/control/mute takes T/F, 0/1 or 0.0/1.0")
    elif field == "intensity" and tag not in "if":
        raise ControlError("bad_value", "/hop/control/intensity takes a float or an int")
    elif field == "style" and tag != "s":
        raise ControlError("bad_value", "/hop/control/style takes a string")
    return check_fields({field: value}, styles)


def _type_tags(datagram: bytes) -> str | None:
    """The type tags after the address (python-osc does not expose them); None if there are none."""
    end = datagram.find(b"\0")
    start = (end + 4) & ~3
    tags_end = datagram.find(b"\0", start)
    if end < 0 or tags_end < 0 or datagram[start:start + 1] != b",":
        return None
    return datagram[start + 1:tags_end].decode("ascii", "replace")


def _canonical(datagram: bytes, address: str, types: str, params: list) -> bool:
    try:
        return osc_message(address, types, params).dgram == datagram
    except Exception:
        return False


class OscControlServer:
    """A UDP thread that validates control datagrams and hands each valid one to ``on_control``.

    It knows nothing of what receives the controls: ``on_control`` is called on this
    thread with a validated ``Control``; a ControlError it raises rejects the message
    (counted by its code); any other exception is counted in ``stats()["last_error"]``
    and the server keeps going.
    """

    def __init__(self, options: OscControlOptions, on_control: Callable[[Control], None],
                 styles: tuple[str, ...] = ()):
        if not is_loopback(options.host):
            raise ValueError(f"OSC control has no authentication and binds loopback only, not {options.host!r}; "
                             "forward it with ssh -L or socat from the machine that sends")
        low, high = RANGES["outputs.osc_control_port"]
        if isinstance(options.port, bool) or not isinstance(options.port, int) or not low <= options.port <= high:
            raise ValueError(f"OSC control port {options.port!r} is not a port; expected PORT in {low}..{high} "
                             f"({low}: any free port)")
        self.options = options
        self.styles = styles
        self._on_control = on_control
        self._senders: OrderedDict[tuple, RateLimit] = OrderedDict()
        self._lock = threading.Lock()
        self._counts = {"accepted": 0, "rejected": 0}
        self._reasons: Counter[str] = Counter()
        self._last_error = ""
        self._sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_DGRAM)
        try:  # room for a burst: a flooding sender then costs others their allowance less often in the kernel
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        except OSError:
            pass
        try:
            self._sock.bind((options.host, options.port))
        except OSError as error:
            self._sock.close()
            raise OSError(f"cannot receive OSC control on {options.host}:{options.port} ({error.strerror}); "
                          "pick another port") from None
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="osc-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                datagram, sender = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.handle(datagram, sender)

    def handle(self, datagram: bytes, sender: tuple) -> None:
        try:
            if len(datagram) > self.options.max_bytes:
                raise ControlError("too_large", f"control datagrams are limited to {self.options.max_bytes} bytes")
            if not self._limiter(tuple(sender[:2])).allow():
                raise ControlError("rate_limited", f"at most {self.options.rate_hz:g} control messages per second")
            control = parse_osc_control(datagram, self.styles)
            self._on_control(control)  # the receiver's own check: ControlError if it cannot apply it
        except ControlError as error:
            with self._lock:
                self._counts["rejected"] += 1
                self._reasons[error.code] += 1
                self._last_error = str(error)
            return
        except Exception as error:  # the callback must not take the server down
            with self._lock:
                self._counts["rejected"] += 1
                self._reasons["internal"] += 1
                self._last_error = f"control callback failed: {error!r}"
            return
        with self._lock:
            self._counts["accepted"] += 1

    def _limiter(self, sender: tuple) -> RateLimit:
        """The allowance of one sending socket, (host, port)."""
        limiter = self._senders.get(sender)
        if limiter is None:
            if len(self._senders) >= MAX_SENDERS:
                self._senders.popitem(last=False)
            limiter = self._senders[sender] = RateLimit(self.options.rate_hz)
        self._senders.move_to_end(sender)
        return limiter

    def stats(self) -> dict:
        with self._lock:
            return {**self._counts, "rejected_by_reason": dict(self._reasons), "last_error": self._last_error,
                    "port": self.port}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
