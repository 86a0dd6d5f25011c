"""A cheap streaming voice-activity detector: frame energy against an adaptive noise floor.

One decision per pose frame (1/30 s by default). The noise floor is the quietest
frame of the last couple of seconds ("minimum statistics"): a fan or hum sets it
within that time, while speech, which always has quieter moments between
syllables and words, stays well above it. A hangover keeps the
decision "speaking" through the gaps between words, so the motion does not flicker
to idle mid-sentence. Costs one dot product per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VadOptions:
    sample_rate: int = 16_000
    frame_rate: float = 30.0
    # A frame is voiced when it is this far above the noise floor...
    threshold_db: float = 9.0
    # ...and louder than this absolute level (digital silence / a muted mic never speaks).
    min_level_dbfs: float = -55.0
    # The floor is the quietest frame within this many seconds.
    floor_window_s: float = 2.0
    # Voiced frames needed in a row to start speaking (rejects clicks).
    onset_frames: int = 2
    hangover_s: float = 0.35
    # The floor never drops below this, so after digital silence a faint hiss
    # is not mistaken for speech.
    lowest_floor_dbfs: float = -70.0


class VoiceActivityDetector:
    def __init__(self, options: VadOptions = VadOptions()):
        if options.frame_rate <= 0 or options.frame_rate > options.sample_rate:
            raise ValueError(f"frame_rate must be in (0, sample_rate], got {options.frame_rate}")
        self.options = options
        self.noise_floor_dbfs = options.lowest_floor_dbfs
        self.level_dbfs = -120.0
        self.speaking = False
        self._hangover_frames = max(0, round(options.hangover_s * options.frame_rate))
        # Starts empty (+inf): the first frames set the floor rather than a guess.
        self._recent_levels = np.full(max(1, round(options.floor_window_s * options.frame_rate)), np.inf)
        self._frames_done = 0
        self._samples_in = 0
        self._energy = 0.0  # sum of squares of the frame being filled
        self._filled = 0
        self._voiced_run = 0
        self._frames_since_voiced = self._hangover_frames + 1

    def _frame_end(self, frame_index: int) -> int:
        """Absolute sample index where frame `frame_index` ends (frames need not be whole samples)."""
        return round((frame_index + 1) * self.options.sample_rate / self.options.frame_rate)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed consecutive samples; returns one bool per frame completed in this block."""
        decisions = []
        position = 0
        while position < len(block):
            frame_end = self._frame_end(self._frames_done)
            take = min(len(block) - position, frame_end - self._samples_in)
            piece = block[position : position + take].astype(np.float64)
            self._energy += float(np.dot(piece, piece))
            self._filled += take
            self._samples_in += take
            position += take
            if self._samples_in == frame_end:
                decisions.append(self._decide(self._energy / max(self._filled, 1)))
                self._energy = 0.0
                self._filled = 0
                self._frames_done += 1
        return np.array(decisions, dtype=bool)

    def _decide(self, mean_square: float) -> bool:
        options = self.options
        level = 10.0 * math.log10(mean_square + 1e-12)
        self.level_dbfs = level
        self._recent_levels[self._frames_done % len(self._recent_levels)] = level
        self.noise_floor_dbfs = max(float(self._recent_levels.min()), options.lowest_floor_dbfs)
        voiced = level > self.noise_floor_dbfs + options.threshold_db and level > options.min_level_dbfs
        self._voiced_run = self._voiced_run + 1 if voiced else 0
        if self._voiced_run >= options.onset_frames or (self.speaking and voiced):
            self.speaking = True
            self._frames_since_voiced = 0
        else:
            self._frames_since_voiced += 1
            if self._frames_since_voiced > self._hangover_frames:
                self.speaking = False
        return self.speaking
