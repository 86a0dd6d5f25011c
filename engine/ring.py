"""A preallocated ring of 16 kHz mono float32 samples, addressed by absolute index.

One producer (the audio callback or a file thread) appends blocks; one consumer
(the model thread) reads any span [start, stop) of absolute sample indices. No lock
is shared: the producer announces the span it is about to overwrite
(`_claimed`), copies, then publishes it (`_written`). The consumer copies first and
checks `_claimed` afterwards, so a span that was overwritten while it was being
copied is reported as an overrun instead of being returned torn.

Each block also records a timing anchor (index just past the block, perf_counter
time at which that sample was captured), so the runtime can ask for the capture
time of any sample it turns into a pose frame.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000


class RingOverrun(Exception):
    """The requested samples were overwritten before the reader got to them."""

    def __init__(self, start: int, oldest_available: int):
        super().__init__(
            f"samples from {start} were overwritten; oldest still held is {oldest_available} "
            "(the reader fell behind by more than the ring's length)"
        )
        self.start = start
        self.oldest_available = oldest_available


@dataclass(frozen=True)
class RingOptions:
    seconds: float = 10.0
    sample_rate: int = SAMPLE_RATE
    # Anchors older than this many blocks are forgotten; the runtime only asks
    # about recent samples.
    anchor_count: int = 512


class SampleRing:
    def __init__(self, options: RingOptions = RingOptions()):
        if options.seconds <= 0:
            raise ValueError(f"ring length must be positive, got {options.seconds} s")
        self.sample_rate = options.sample_rate
        self.capacity = int(round(options.seconds * options.sample_rate))
        self._samples = np.zeros(self.capacity, dtype=np.float32)
        self._claimed = 0  # highest index the producer may be writing to (exclusive)
        self._written = 0  # total samples published
        self._anchor_index = np.zeros(options.anchor_count, dtype=np.int64)
        self._anchor_time = np.zeros(options.anchor_count, dtype=np.float64)
        self._anchors_written = 0
        self._data_arrived = threading.Event()
        # Set by the consumer through release(); only a producer that must not
        # overwrite unread audio (offline file conversion) looks at it.
        self.consumed = 0
        self.producer_overwrites = 0  # blocks longer than the ring, truncated
        self.reader_overruns = 0

    # -- producer side -------------------------------------------------------
    def write(self, block: np.ndarray, end_capture_time: float) -> None:
        """Append `block`; `end_capture_time` is when its last sample ended (perf_counter)."""
        count = len(block)
        if count == 0:
            return
        if count > self.capacity:
            # Only the newest samples fit; account for the rest as skipped.
            self.producer_overwrites += 1
            block = block[-self.capacity :]
            self._written += count - self.capacity
            self._claimed = self._written
            count = self.capacity
        start = self._written
        self._claimed = start + count
        head = start % self.capacity
        first = min(count, self.capacity - head)
        self._samples[head : head + first] = block[:first]
        if first < count:
            self._samples[: count - first] = block[first:]
        slot = self._anchors_written % len(self._anchor_index)
        self._anchor_index[slot] = start + count
        self._anchor_time[slot] = end_capture_time
        self._anchors_written += 1
        self._written = start + count
        self._data_arrived.set()

    # -- consumer side -------------------------------------------------------
    @property
    def written(self) -> int:
        """Total samples published so far (the index one past the newest sample)."""
        return self._written

    @property
    def oldest_available(self) -> int:
        return max(0, self._claimed - self.capacity)

    def wait_for(self, index: int, timeout: float) -> bool:
        """Block until sample `index - 1` has been written; False on timeout."""
        deadline = time.perf_counter() + timeout
        while self._written < index:
            # Clear, then re-check: a write landing in between is not missed.
            self._data_arrived.clear()
            if self._written >= index:
                break
            left = deadline - time.perf_counter()
            if left <= 0 or not self._data_arrived.wait(left):
                return self._written >= index
        return True

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Copy samples [start, stop); raises RingOverrun if any were overwritten."""
        if not 0 <= start <= stop:
            raise ValueError(f"bad span [{start}, {stop})")
        if stop > self._written:
            raise ValueError(f"samples up to {stop} requested but only {self._written} written")
        count = stop - start
        if count > self.capacity:
            raise ValueError(f"span of {count} samples exceeds the ring's {self.capacity}")
        if out is None:
            out = np.empty(count, dtype=np.float32)
        elif len(out) != count:
            raise ValueError(f"out has {len(out)} samples, span needs {count}")
        head = start % self.capacity
        first = min(count, self.capacity - head)
        out[:first] = self._samples[head : head + first]
        if first < count:
            out[first:] = self._samples[: count - first]
        # Checked after the copy: a producer that claimed past start + capacity
        # may have overwritten part of what was just copied.
        if start < self._claimed - self.capacity:
            self.reader_overruns += 1
            raise RingOverrun(start, self.oldest_available)
        return out

    def release(self, index: int) -> None:
        """The consumer is done with all samples before `index`."""
        if index > self.consumed:
            self.consumed = index

    def capture_time(self, index: int) -> float:
        """perf_counter time at which sample `index` was captured (start of the sample)."""
        total = self._anchors_written
        if total == 0:
            raise ValueError("no audio has been written yet")
        size = len(self._anchor_index)
        # Newest anchor at or after `index`: its block contains the sample or a later one,
        # so the offset back to `index` is short and clock drift is negligible.
        best_slot = (total - 1) % size
        for back in range(min(total, size)):
            slot = (total - 1 - back) % size
            if self._anchor_index[slot] <= index:
                break
            best_slot = slot
        return float(
            self._anchor_time[best_slot]
            - (self._anchor_index[best_slot] - index) / self.sample_rate
        )
