"""Streaming conversion of any rate / channel count to 16 kHz mono.

A rational polyphase resampler whose filter history and phase carry across blocks,
so feeding a signal block by block gives exactly what
`scipy.signal.resample_poly(mono, up, down)` gives for the whole signal (same
Kaiser-windowed filter, same alignment). All buffers are allocated up front; the
per-block work is one numba call, safe to run inside an audio callback.
"""

from __future__ import annotations

from math import gcd

import numba
import numpy as np
from scipy.signal import firwin

TARGET_RATE = 16_000


@numba.njit(cache=True, nogil=True)
def _mix_and_resample(block, work, taps, state, out):
    """Mix `block` (frames x channels) to mono and resample it into `out`.

    work:  history (taps-per-phase - 1 samples) followed by room for one block.
    taps:  polyphase filter, shape (up, taps_per_phase).
    state: [position of the next output in 1/up input samples relative to this
            block's first sample, outputs still to discard for alignment, down].
    Returns the number of samples written to `out`.
    """
    frames, channels = block.shape
    up, per_phase = taps.shape
    down = state[2]
    history = per_phase - 1
    scale = 1.0 / channels
    for i in range(frames):
        acc = 0.0
        for c in range(channels):
            acc += block[i, c]
        work[history + i] = acc * scale
    position = state[0]
    to_discard = state[1]
    produced = 0
    limit = frames * up
    while position < limit:
        index = position // up
        phase = position - index * up
        newest = history + index
        acc = 0.0
        for k in range(per_phase):
            acc += taps[phase, k] * work[newest - k]
        if to_discard > 0:
            to_discard -= 1
        else:
            out[produced] = acc
            produced += 1
        position += down
    state[0] = position - limit
    state[1] = to_discard
    # Keep the newest input samples as history for the next block.
    for k in range(history):
        work[k] = work[frames + k]
    return produced


class StreamingResampler:
    """Converts blocks of (frames, channels) float32 at `input_rate` to 16 kHz mono."""

    def __init__(self, input_rate: int, channels: int, max_block_frames: int):
        if input_rate <= 0 or channels <= 0 or max_block_frames <= 0:
            raise ValueError(
                f"bad stream format: {input_rate} Hz, {channels} channels, {max_block_frames} frames"
            )
        divisor = gcd(int(input_rate), TARGET_RATE)
        self.up = TARGET_RATE // divisor
        self.down = int(input_rate) // divisor
        self.input_rate = int(input_rate)
        self.channels = channels
        self.max_block_frames = max_block_frames
        self.taps, discard = _polyphase_filter(self.up, self.down)
        per_phase = self.taps.shape[1]
        self._work = np.zeros(per_phase - 1 + max_block_frames, dtype=np.float64)
        self._state = np.array([0, discard, self.down], dtype=np.int64)
        self._out = np.zeros(max_block_frames * self.up // self.down + 2, dtype=np.float32)
        self.frames_in = 0
        self.samples_out = 0
        # Compile (or load from cache) now, never inside the audio callback.
        self.process(np.zeros((1, channels), dtype=np.float32))
        self.reset()

    def reset(self) -> None:
        """Forget history, e.g. after the device was re-opened."""
        self._work[:] = 0.0
        self._state[0] = 0
        self._state[1] = _polyphase_filter(self.up, self.down)[1]
        self.frames_in = 0
        self.samples_out = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample one block; returns a view into an internal buffer (copy it before the next call)."""
        frames = block.shape[0]
        if frames > self.max_block_frames:
            raise ValueError(f"block of {frames} frames exceeds the prepared {self.max_block_frames}")
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) samples, got {block.shape}")
        produced = _mix_and_resample(block, self._work, self.taps, self._state, self._out)
        self.frames_in += frames
        self.samples_out += produced
        return self._out[:produced]

    @property
    def lag_seconds(self) -> float:
        """How far the newest output sample trails the newest input sample, in seconds."""
        return self.frames_in / self.input_rate - self.samples_out / TARGET_RATE


_filter_cache: dict[tuple[int, int], tuple[np.ndarray, int]] = {}


def _polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """The filter resample_poly uses, split into `up` phases, plus its alignment discard."""
    key = (up, down)
    if key in _filter_cache:
        return _filter_cache[key]
    if up == down == 1:
        result = (np.ones((1, 1), dtype=np.float64), 0)
    else:
        half_len = 10 * max(up, down)
        taps = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
        # Same front padding and discard as resample_poly, so outputs line up with it.
        pre_pad = down - half_len % down
        taps = np.concatenate([np.zeros(pre_pad), taps])
        discard = (half_len + pre_pad) // down
        per_phase = -(-len(taps) // up)
        padded = np.zeros(per_phase * up)
        padded[: len(taps)] = taps
        result = (np.ascontiguousarray(padded.reshape(per_phase, up).T), discard)
    _filter_cache[key] = result
    return result
