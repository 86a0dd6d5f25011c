"""Live statistics of the engine: what `--stats` prints and what monitors read.

Every part reports into one `EngineStatus`: the runtime loop records each emitted
frame's latency, the sources report their state and overflows, the sanitiser its
counters, the ASR its lag. `snapshot()` gives a JSON-serialisable dict;
`status_line()` one terminal line. Recording is cheap (a few float stores into
preallocated rings) because it runs on the real-time thread.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class SourceState(str, enum.Enum):
    STARTING = "starting"
    LIVE = "live"
    LOST = "lost"  # the device vanished; retrying, the engine shows idle motion
    FINISHED = "finished"  # a file source reached its end
    STOPPED = "stopped"
    FAILED = "failed"  # could not open and will not retry; the message says why


class AsrState(str, enum.Enum):
    OFF = "off"  # --no-asr
    STARTING = "starting"
    RUNNING = "running"
    UNAVAILABLE = "unavailable"  # model missing or process died; the engine goes on without text


@dataclass(frozen=True)
class StatusOptions:
    # Latency percentiles and fps are computed over this many recent frames.
    window_frames: int = 600


class RollingWindow:
    """The last `size` float values in a preallocated array."""

    def __init__(self, size: int):
        self._values = np.zeros(size, dtype=np.float64)
        self._count = 0

    def add(self, value: float) -> None:
        self._values[self._count % len(self._values)] = value
        self._count += 1

    def values(self) -> np.ndarray:
        return self._values[: min(self._count, len(self._values))]

    def __len__(self) -> int:
        return min(self._count, len(self._values))


class EngineStatus:
    def __init__(self, options: StatusOptions = StatusOptions()):
        self.started_at = time.perf_counter()
        self._latency_ms = RollingWindow(options.window_frames)
        self._frame_times = RollingWindow(options.window_frames)
        self._asr_lag_ms = RollingWindow(200)
        self.frames_emitted = 0
        self.frames_skipped = 0  # frames the loop skipped to catch up
        self.frames_dropped = 0  # frames an output could not deliver
        # Where every send comes from, published by the loop thread as one consistent dict
        # (see Engine._account): audio captured and consumed, frames computed and skipped,
        # sends written, superseded, pending and idle, and the capture clock's drift.
        self.accounting: dict = {}
        self.ring_overruns = 0
        self.input_overflows = 0
        self.source_state = SourceState.STARTING
        self.source_message = ""
        self.source_name = ""
        self.device_losses = 0
        self.speaking = False
        self.asr_state = AsrState.OFF
        self.asr_message = ""
        self.asr_words = 0
        self.sanitizer: dict = {}
        self.errors: deque[str] = deque(maxlen=20)
        # Control inputs (OSC) report their own figures; name -> a function returning them.
        self.control_inputs: dict[str, Callable[[], dict]] = {}
        # Outputs in a fault state now (hop.engine.outputs): name -> {"fault", "since", ...}.
        self.output_faults: dict[str, dict] = {}

    # -- recording (called from the engine's threads) ------------------------
    def record_frame(self, latency_s: float, emitted_at: float | None = None) -> None:
        self._latency_ms.add(latency_s * 1000.0)
        self._frame_times.add(time.perf_counter() if emitted_at is None else emitted_at)
        self.frames_emitted += 1

    def record_asr_lag(self, lag_s: float) -> None:
        self._asr_lag_ms.add(lag_s * 1000.0)

    def record_error(self, message: str) -> None:
        self.errors.append(message)

    # -- reading -------------------------------------------------------------
    def fps(self) -> float:
        times = self._frame_times.values()
        if len(times) < 2:
            return 0.0
        span = float(times.max() - times.min())
        return (len(times) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict:
        """All figures as plain numbers and strings (json.dumps works on it)."""
        latency = self._latency_ms.values()
        asr_lag = self._asr_lag_ms.values()
        return {
            "uptime_s": round(time.perf_counter() - self.started_at, 3),
            "fps": round(self.fps(), 2),
            "frames_emitted": self.frames_emitted,
            "frames_skipped": self.frames_skipped,
            "frames_dropped": self.frames_dropped,
            "accounting": dict(self.accounting),
            "latency_ms": _percentiles(latency),
            "ring_overruns": self.ring_overruns,
            "input_overflows": self.input_overflows,
            "source": {
                "name": self.source_name,
                "state": self.source_state.value,
                "message": self.source_message,
                "losses": self.device_losses,
            },
            "speaking": self.speaking,
            "asr": {
                "state": self.asr_state.value,
                "message": self.asr_message,
                "words": self.asr_words,
                "lag_ms": _percentiles(asr_lag),
            },
            "sanitizer": dict(self.sanitizer),
            "recent_errors": list(self.errors),
            "control_inputs": {name: figures() for name, figures in self.control_inputs.items()},
            "output_faults": {name: dict(fault) for name, fault in self.output_faults.items()},
        }

    def status_line(self) -> str:
        """One line for the terminal, e.g. `live  30.0 fps  lat 12/18/25 ms  ...`; each output's
        fault in words right after the state: `live  bvh: disk full since 12:01:03 | 30.0 fps ...`."""
        snap = self.snapshot()
        faults = "; ".join(
            f"{name}: {fault['fault']} since {fault['since']}"
            + (f" ({fault['refused']} sends refused)" if fault.get("refused") else "")
            for name, fault in snap["output_faults"].items())
        latency = snap["latency_ms"]
        asr = snap["asr"]
        asr_part = (
            f"asr {asr['lag_ms']['p50']:.0f} ms lag" if asr["state"] == AsrState.RUNNING.value
            else f"asr {asr['state']}"
        )
        clean = snap["sanitizer"]
        fixes = clean.get("nonfinite_samples", 0) + clean.get("denormal_samples", 0)
        return (
            f"{snap['source']['state']:<8} " + (f"{faults} | " if faults else "") + f"{snap['fps']:5.1f} fps  "
            f"lat p50/p95/p99 {latency['p50']:.1f}/{latency['p95']:.1f}/{latency['p99']:.1f} ms  "
            f"overruns {snap['ring_overruns']}  overflows {snap['input_overflows']}  "
            f"skipped {snap['frames_skipped']}  dropped {snap['frames_dropped']}  "
            f"clipped {clean.get('clipped_samples', 0)}  fixed {fixes}  "
            f"{'speech' if snap['speaking'] else 'silence'}  {asr_part}"
        )


def _percentiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(values.max()), 3),
        "count": int(len(values)),
    }
