"""The outputs of a run, fed together, for the live driver and offline conversion alike.

A sink must not raise and counts its own failures (an unreachable OSC target, a full
disk); if one raises anyway it is recorded and the others still get the frame.
``publish()`` copies the sinks' counted drops and new errors into the status, so
``--stats`` and monitors see them, and each sink's current fault (``fault`` and
``fault_since`` in its stats: "no receiver at 127.0.0.1:9000", "disk full"): into
``status.output_faults`` while it lasts, and into the status's errors once when it begins
and once when it ends, never once per frame.
"""

from __future__ import annotations

import sys
import time

from hop.bridges.frame import PoseFrame, PoseSink
from hop.engine.status import EngineStatus


class Outputs:
    def __init__(self, sinks: list[PoseSink], status: EngineStatus):
        self.sinks = sinks
        self.status = status
        self._errors_seen: dict[int, int] = {}  # errors each sink had counted at the last publish
        self._faults_seen: dict[int, str] = {}  # each sink's fault at the last publish

    def send(self, frame: PoseFrame) -> None:
        for sink in self.sinks:
            try:
                sink.send(frame)
            except Exception as error:
                self.status.record_error(f"{type(sink).__name__}.send failed: {error!r}")

    def publish(self) -> None:
        dropped = 0
        faults = {}
        for i, sink in enumerate(self.sinks):
            try:
                stats = sink.stats()
                dropped += int(stats.get("dropped", 0))
                errors = int(stats.get("errors", 0))
            except Exception:
                continue
            fault, name = str(stats.get("fault") or ""), self.name(i)
            if fault:
                faults[name] = {"fault": fault, "since": _clock(stats.get("fault_since")),
                                **({"refused": stats["refused"]} if stats.get("refused") else {})}
            previous = self._faults_seen.get(i, "")
            if errors > self._errors_seen.get(i, 0):
                if not fault or fault != previous:  # a lasting fault is one state, not a line per publish
                    self.status.record_error(f"{type(sink).__name__}: {errors - self._errors_seen.get(i, 0)} "
                                             f"new send errors, last: {stats.get('last_error', '')}")
                self._errors_seen[i] = errors
            if fault != previous:
                self.status.record_error(f"{name}: {fault} since {faults[name]['since']}" if fault
                                         else f"{name}: {previous}: over at {_clock(time.time())}")
                self._faults_seen[i] = fault
        self.status.frames_dropped = dropped
        self.status.output_faults = faults

    def name(self, i: int) -> str:
        """A sink's short name in the status: osc, vmc, ws, bvh (numbered when there are several)."""
        kinds = [_KINDS.get(type(sink).__name__, type(sink).__name__) for sink in self.sinks]
        return kinds[i] if kinds.count(kinds[i]) == 1 else f"{kinds[i]}#{kinds[:i].count(kinds[i]) + 1}"

    def stats(self) -> dict[str, dict]:
        return {f"{type(sink).__name__}[{i}]": _safe_stats(sink) for i, sink in enumerate(self.sinks)}

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:
                print(f"hop-live: closing {type(sink).__name__} failed: {error!r}", file=sys.stderr)


_KINDS = {"OscSink": "osc", "VmcSink": "vmc", "WebSocketSink": "ws", "BvhRecorder": "bvh"}


def _clock(unix_time) -> str:
    """Local wall-clock time of day, as the status line shows it (12:01:03)."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(unix_time)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _safe_stats(sink) -> dict:
    try:
        return dict(sink.stats())
    except Exception as error:
        return {"error": repr(error)}
