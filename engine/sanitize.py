"""Cleans audio before the front end and counts what it had to fix.

Drivers and files can deliver NaN/inf (broken plugins, corrupt floats), denormals
(which make every later multiply slow on x86), a DC offset (cheap USB mics) and
clipping (gain too high). Each is repaired where possible and counted, so the
status line shows it instead of the model silently producing odd motion.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba
import numpy as np

# Smallest normal float32 is ~1.2e-38; anything this small is inaudible anyway.
_DENORMAL_LIMIT = 1e-30


@dataclass(frozen=True)
class SanitizerOptions:
    sample_rate: int = 16_000
    # One-pole high-pass corner removing DC; far below the lowest Mel band's energy.
    dc_cutoff_hz: float = 10.0
    # Samples at or above this magnitude (before filtering) count as clipped.
    clip_level: float = 0.999


@dataclass
class SanitizerCounts:
    nonfinite_samples: int = 0
    denormal_samples: int = 0
    clipped_samples: int = 0
    samples_seen: int = 0
    # Last estimate of the DC offset removed (mean input minus mean output).
    dc_offset: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@numba.njit(cache=True, nogil=True)
def _sanitize(block, clip_level, pole, state, counts):
    """In place: replace non-finite with 0, flush denormals, count clips, high-pass.

    state: [previous input, previous output]; counts: [nonfinite, denormal, clipped].
    Returns the total the high-pass removed (for the DC offset estimate).
    """
    removed = 0.0
    previous_in = state[0]
    previous_out = state[1]
    for i in range(block.shape[0]):
        x = block[i]
        if not math.isfinite(x):
            counts[0] += 1
            x = 0.0
        elif x != 0.0 and abs(x) < _DENORMAL_LIMIT:
            counts[1] += 1
            x = 0.0
        if abs(x) >= clip_level:
            counts[2] += 1
        y = x - previous_in + pole * previous_out
        if abs(y) < _DENORMAL_LIMIT:
            y = 0.0
        removed += x - y
        previous_in = x
        previous_out = y
        block[i] = y
    state[0] = previous_in
    state[1] = previous_out
    return removed


class AudioSanitizer:
    """Stateful: feed consecutive blocks of one stream, in order."""

    def __init__(self, options: SanitizerOptions = SanitizerOptions()):
        if options.dc_cutoff_hz < 0 or options.dc_cutoff_hz >= options.sample_rate / 2:
            raise ValueError(
                f"dc_cutoff_hz must be in [0, {options.sample_rate / 2}), got {options.dc_cutoff_hz}"
            )
        self.options = options
        # pole 1.0 with y = x - x_prev + y_prev passes the signal unchanged (no high-pass).
        self._pole = math.exp(-2.0 * math.pi * options.dc_cutoff_hz / options.sample_rate)
        self._state = np.zeros(2, dtype=np.float64)
        self._counts = np.zeros(3, dtype=np.int64)
        self._samples_seen = 0
        self._dc_estimate = 0.0
        self.process(np.zeros(1, dtype=np.float32))  # compile now, not on the first real block
        self._state[:] = 0.0
        self._samples_seen = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Sanitise a float32 mono block in place and return it."""
        if block.dtype != np.float32 or block.ndim != 1:
            raise ValueError(f"expected 1-D float32 samples, got {block.dtype} {block.shape}")
        if len(block) == 0:
            return block
        removed = _sanitize(block, self.options.clip_level, self._pole, self._state, self._counts)
        # A slow average of what the filter took away; shown in status as the DC offset.
        self._dc_estimate += 0.05 * (removed / len(block) - self._dc_estimate)
        self._samples_seen += len(block)
        return block

    @property
    def counts(self) -> SanitizerCounts:
        return SanitizerCounts(
            nonfinite_samples=int(self._counts[0]),
            denormal_samples=int(self._counts[1]),
            clipped_samples=int(self._counts[2]),
            samples_seen=self._samples_seen,
            dc_offset=self._dc_estimate,
        )
