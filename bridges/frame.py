"""The one thing every output bridge consumes: a pose frame, and the sink protocol.

The engine produces ``PoseFrame``s at the send rate and hands each one to every
configured ``PoseSink`` (VMC, native OSC, WebSocket, BVH recorder). Sinks must
never stall or crash the engine: a dead target or a full disk is counted in
``stats()`` and reported there, not raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class PoseFrame:
    index: int  # frame number since the stream started (send-rate frames)
    capture_time: float  # time.perf_counter() of the newest audio sample this pose depends on
    dir_vec: np.ndarray  # (n_bones*3,) float32 unit bone directions, TED convention (up -y, +z forward, subject's left -x), mean already added back
    speaking: bool  # voice activity at this frame
    stream: int = 0  # speaker/channel index (one output per speaker)
    skeleton: str = "ted_gesture"
    # Face weights 0..1 by VRM 1.0 expression preset name: mouth shapes "aa", "ih", "ou", "ee",
    # "oh" from the voice and "blink"; empty when the engine makes none. Outputs map the names
    # to their own (VRM 0.x: A, I, U, E, O, Blink).
    expressions: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class PoseSink(Protocol):
    def send(self, frame: PoseFrame) -> None:
        """Hand over one frame. Never blocks long; errors are counted, not raised."""
        ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, float | int | str]:
        """At least: sent, dropped, errors, last_error."""
        ...
