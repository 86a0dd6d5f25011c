"""Output: native OSC (the /hop/... address space), and the UDP sending both OSC outputs share.

One OSC bundle per frame (timetag "immediately"), messages in this order:

    /hop/frame     i        frame index since the stream started
    /hop/stream    i        speaker / channel index
    /hop/time      d        capture time: time.perf_counter() of the newest audio
                            sample the pose depends on (float64; comparable with
                            perf_counter / CLOCK_MONOTONIC of other processes on
                            the same machine)
    /hop/speaking  i        1 while voice is active, else 0
    /hop/skeleton  s        "ted_gesture" (9 bones) or "ted_expressive" (42)
    /hop/dirvec    f*(3B)   unit bone directions, TED convention (up -y, +z
                            forward, subject's left -x), bone order of the skeleton
    /hop/joints    f*(3J)   joint positions from those directions and the
                            skeleton's bone lengths (metres, same axes, root at 0)
    /hop/expressions (s f)*  face weights 0..1 as name, value pairs (VRM 1.0 presets:
                            aa ih ou ee oh blink); only when the frame has any

bridges/README.md documents the same, with receiver notes.
"""

from __future__ import annotations

import errno
import socket
import time

import numpy as np

from hop.bridges.frame import PoseFrame
from hop.bridges.osc_wire import osc_bundle, osc_message
from hop.model.skeleton import get_skeleton


# Errors that describe the target, not one datagram: while they last the output is in a fault
# state (one state and a counter, not an error per frame).
_UNREACHABLE = {errno.ECONNREFUSED: "no receiver at {target}", errno.EHOSTUNREACH: "host {target} unreachable",
                errno.ENETUNREACH: "network unreachable for {target}", errno.ENETDOWN: "network down for {target}"}
FAULT_CLEARS_AFTER_S = 1.0  # a fault ends once sends have gone this long without one


class UdpSender:
    """A connected, non-blocking UDP socket that counts failures instead of raising them.

    Connecting lets the kernel report "port unreachable" (ECONNREFUSED) from an
    earlier datagram, so a missing receiver shows up. A refusing or unreachable target
    is a fault state, not an error per datagram: ``stats()["fault"]`` says it in words
    ("no receiver at 127.0.0.1:9000"), ``fault_since`` when it began (Unix time) and
    ``refused`` counts the sends it cost; it ends after FAULT_CLEARS_AFTER_S without one.
    """

    def __init__(self, host: str, port: int):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer 1-65535, got {port!r}")
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as error:
            raise ValueError(f"cannot resolve OSC target host {host!r} ({error}); give an IP address or a known host name") from None
        self.target = f"{host}:{port}"
        self._socket = socket.socket(family, kind, proto)
        self._socket.setblocking(False)
        self._socket.connect(address)
        self.sent = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""
        self.refused = 0  # sends lost to a refusing or unreachable target
        self.fault = ""
        self.fault_since: float | None = None  # time.time() when the fault began
        self._fault_seen_at = 0.0  # time.monotonic() of its latest sign

    def send(self, packet: bytes) -> None:
        try:
            self._socket.send(packet)
            self.sent += 1
        except BlockingIOError:
            self.dropped += 1  # socket buffer full: losing a pose frame beats stalling the engine
            return
        except OSError as error:
            if error.errno in _UNREACHABLE:
                self._unreachable(error)
            else:
                self.record_error(error)
            return
        if self.fault and time.monotonic() - self._fault_seen_at > FAULT_CLEARS_AFTER_S:
            self.fault, self.fault_since = "", None

    def _unreachable(self, error: OSError) -> None:
        self.refused += 1
        self._fault_seen_at = time.monotonic()
        fault = _UNREACHABLE[error.errno].format(target=self.target)
        if fault != self.fault:
            self.fault, self.fault_since = fault, time.time()
            self.last_error = f"{type(error).__name__}: {error}"

    def record_error(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"

    def stats(self) -> dict[str, float | int | str | None]:
        return {"sent": self.sent, "dropped": self.dropped, "errors": self.errors, "last_error": self.last_error,
                "refused": self.refused, "fault": self.fault, "fault_since": self.fault_since}

    def close(self) -> None:
        self._socket.close()


def encode_native_bundle(frame: PoseFrame) -> bytes:
    """The /hop/... bundle for one frame."""
    skeleton = get_skeleton(frame.skeleton)
    dir_vec = np.asarray(frame.dir_vec, dtype=np.float32).reshape(-1)
    if dir_vec.shape[0] != skeleton.pose_dim:
        raise ValueError(f"frame {frame.index}: dir_vec has {dir_vec.shape[0]} numbers, "
                         f"skeleton {skeleton.name!r} needs {skeleton.pose_dim}")
    joints = skeleton.dir_vec_to_joints(dir_vec).reshape(-1)
    return osc_bundle([
        osc_message("/hop/frame", "i", [frame.index]),
        osc_message("/hop/stream", "i", [frame.stream]),
        osc_message("/hop/time", "d", [frame.capture_time]),
        osc_message("/hop/speaking", "i", [int(frame.speaking)]),
        osc_message("/hop/skeleton", "s", [skeleton.name]),
        osc_message("/hop/dirvec", "f" * len(dir_vec), dir_vec.tolist()),
        osc_message("/hop/joints", "f" * len(joints), joints.tolist()),
        *_expressions_message(frame),
    ])


def _expressions_message(frame: PoseFrame) -> list:
    """``/hop/expressions`` name, value, name, value...: last, and only when the frame has face weights."""
    if not frame.expressions:
        return []
    pairs = [item for name, value in frame.expressions.items() for item in (str(name), float(value))]
    return [osc_message("/hop/expressions", "sf" * len(frame.expressions), pairs)]


class OscSink:
    """Sends every frame (all streams) as a native /hop/... OSC bundle over UDP."""

    def __init__(self, host: str, port: int):
        self._sender = UdpSender(host, port)

    def send(self, frame: PoseFrame) -> None:
        try:
            packet = encode_native_bundle(frame)
        except Exception as error:  # a malformed frame must not take the engine down
            self._sender.record_error(error)
            return
        self._sender.send(packet)

    def close(self) -> None:
        self._sender.close()

    def stats(self) -> dict[str, float | int | str]:
        return self._sender.stats()
