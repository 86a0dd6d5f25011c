"""The outputs of a run, fed together, for the live driver and offline conversion alike.

A sink must not raise and counts its own failures (an unreachable OSC target, a full
disk); if one raises anyway it is recorded and the others still get the frame.
``publish()`` copies the sinks' counted drops and new errors into the status, so
``--stats`` and monitors see them.
"""

from __future__ import annotations

import sys

from hop.bridges.frame import PoseFrame, PoseSink
from hop.engine.status import EngineStatus


class Outputs:
    def __init__(self, sinks: list[PoseSink], status: EngineStatus):
        self.sinks = sinks
        self.status = status
        self._errors_seen: dict[int, int] = {}  # errors each sink had counted at the last publish

    def send(self, frame: PoseFrame) -> None:
        for sink in self.sinks:
            try:
                sink.send(frame)
            except Exception as error:
                self.status.record_error(f"{type(sink).__name__}.send failed: {error!r}")

    def publish(self) -> None:
        dropped = 0
        for i, sink in enumerate(self.sinks):
            try:
                stats = sink.stats()
                dropped += int(stats.get("dropped", 0))
                errors = int(stats.get("errors", 0))
            except Exception:
                continue
            if errors > self._errors_seen.get(i, 0):
                self.status.record_error(f"{type(sink).__name__}: {errors - self._errors_seen.get(i, 0)} new "
                                         f"send errors, last: {stats.get('last_error', '')}")
                self._errors_seen[i] = errors
        self.status.frames_dropped = dropped

    def stats(self) -> dict[str, dict]:
        return {f"{type(sink).__name__}[{i}]": _safe_stats(sink) for i, sink in enumerate(self.sinks)}

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as error:
                print(f"hop-live: closing {type(sink).__name__} failed: {error!r}", file=sys.stderr)


def _safe_stats(sink) -> dict:
    try:
        return dict(sink.stats())
    except Exception as error:
        return {"error": repr(error)}
