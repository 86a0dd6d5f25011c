"""Lip sync and blinks from the live audio: VRM 1.0 mouth shapes and natural blinks per pose frame.

Streaming and causal, one decision per pose frame from the newest ``n_fft`` samples
(32 ms at 16 kHz) and nothing later, in the model's frame timing (frame ``t`` ends at
sample ``(t + 1) * sample_rate // fps``). Per frame, one windowed FFT gives:

- **openness**, from the short-term level of the voice band (125-3100 Hz) placed in the
  speaker's recent range: 0 at ``range_db`` below the speaker's recent peak (a slowly
  decaying maximum of voiced frames), 1 at the peak. Open vowels raise the first
  formant, so the level's openness is scaled up or down by where the energy of the
  F1 band (200-1000 Hz) sits for this speaker.
- **the vowel shape**, from two formant-like proxies: the spectral centroids of the F1
  band (200-1000 Hz) and of the F2 band (800-3000 Hz), each normalised to the speaker
  by a running mean and spread over voiced frames (Lobanov normalisation, as phoneticians
  compare vowels across speakers). A hand-set map places the five VRM vowels in that
  plane (aa: F1 high; oh: F1 mid, F2 low; ou: F1 low, F2 low; ee: F1 mid, F2 high; ih:
  F1 low, F2 highest) and shares the openness among them by a soft nearest-vowel weight,
  so ``aa + ih + ou + ee + oh`` is the openness.

Each shape follows its target with a short attack and a longer release (their sum kept
at most 1). Without voice
(the pipeline's voice activity) or below the noise floor the targets are 0, and a shape
that has decayed under ``closed_below`` is 0 exactly: the mouth is closed in silence.

Blinks are independent of the voice: seeded random intervals (``blink_interval_s``,
start to start), each a fast close and a slower open over ``blink_s``; the same seed
gives the same blinks, so offline conversion stays byte-identical.

Cost: one 512-point real FFT and a 257x5 product per frame, a few tens of microseconds
(benchmarks/test_bench_mouth.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

VOWELS = ("aa", "ih", "ou", "ee", "oh")  # VRM 1.0 presets (VRM 0.x: A, I, U, E, O)
EXPRESSIONS = VOWELS + ("blink",)

# Where each vowel sits in the speaker-normalised (F1, F2) plane, in standard deviations
# of this speaker's voiced frames. Hand-set from the vowel charts' relative positions.
_VOWEL_PLACES = np.array([
    [1.3, -0.1],   # aa: jaw open, tongue central
    [-0.9, 1.3],   # ih: ("ee" in "see") jaw nearly closed, tongue front
    [-0.9, -1.1],  # ou: jaw nearly closed, lips rounded (F2 low)
    [0.2, 0.8],    # ee: ("e" in "bed") mid, front
    [0.3, -1.2],   # oh: mid, rounded
])


@dataclass(frozen=True)
class MouthOptions:
    sample_rate: int = 16_000
    fps: int = 30  # pose frames per second (integer, as the model's front end)
    n_fft: int = 512
    # Openness from level: 0 at range_db below the speaker's recent peak, 1 at the peak.
    range_db: float = 40.0
    # The peak falls this fast while the voice is quieter (a quieter speaker is learnt); it holds
    # through pauses.
    peak_decay_db_per_s: float = 3.0
    # The peak before any voice (a typical level of speech).
    peak_start_dbfs: float = -25.0
    # Nothing opens within this margin of the noise floor (the quietest frame of floor_window_s)...
    floor_margin_db: float = 6.0
    floor_window_s: float = 2.0
    # ...or below this absolute level (digital silence, a muted microphone).
    min_level_dbfs: float = -60.0
    # How much the F1 proxy (in speaker standard deviations) scales the openness.
    f1_gain: float = 0.6
    # Speaker normalisation: running mean and spread of the proxies over voiced frames.
    normalise_s: float = 5.0
    f1_start: tuple[float, float] = (450.0, 115.0)  # (mean Hz, sd Hz) before the speaker is learnt
    f2_start: tuple[float, float] = (1570.0, 375.0)
    # Softness of the nearest-vowel weight (standard deviations).
    vowel_width: float = 0.6
    attack_s: float = 0.06
    release_s: float = 0.1
    closed_below: float = 0.02
    # Blinks: start-to-start interval uniform in blink_interval_s, each blink_s long.
    blink_interval_s: tuple[float, float] = (2.0, 6.0)
    blink_s: float = 0.15
    seed: int = 0


class Blinker:
    """Natural blinks on the pose-frame clock: ``step()`` once per frame gives the blink weight."""

    def __init__(self, options: MouthOptions = MouthOptions()):
        self.options = options
        self._rng = np.random.default_rng(options.seed)
        n = max(3, round(options.blink_s * options.fps))
        closing = max(1, round(0.4 * n))  # eyelids close fast and open more slowly
        opening = n - closing
        self._curve = [(i + 1) / closing for i in range(closing)] + [1.0 - (i + 1) / (opening + 1)
                                                                     for i in range(opening)]
        self._frame = 0
        self._next = self._interval()
        self.blinks = 0

    def _interval(self) -> int:
        low, high = self.options.blink_interval_s
        return max(len(self._curve) + 1, round(self._rng.uniform(low, high) * self.options.fps))

    def step(self, frames: int = 1) -> float:
        """Advance ``frames`` frames; the weight of the last one."""
        value = 0.0
        for _ in range(frames):
            phase = self._frame - self._next
            if phase >= len(self._curve):
                self._next += self._interval()
                phase = self._frame - self._next
            value = self._curve[phase] if phase >= 0 else 0.0
            if phase == 0:
                self.blinks += 1
            self._frame += 1
        return value


class MouthEstimator:
    """Feed consecutive 16 kHz samples of one stream; one expressions dict per completed pose frame."""

    def __init__(self, options: MouthOptions = MouthOptions()):
        if options.n_fft > options.sample_rate or options.fps <= 0:
            raise ValueError(f"bad mouth options: n_fft {options.n_fft}, fps {options.fps}")
        self.options = options
        o = options
        self._window = np.hanning(o.n_fft).astype(np.float32)
        hz = np.fft.rfftfreq(o.n_fft, 1.0 / o.sample_rate)
        voice = (hz >= 125) & (hz < 3100)
        f1 = (hz >= 200) & (hz < 1000)
        f2 = (hz >= 800) & (hz < 3000)
        # power @ bands -> voice energy, F1 energy, F1 energy x Hz, F2 energy, F2 energy x Hz
        self._bands = np.stack([voice, f1, f1 * hz, f2, f2 * hz], axis=1).astype(np.float32)
        # power -> mean square of the band-limited signal (Parseval, for the Hann window)
        self._to_mean_square = 2.0 / (o.n_fft * float(np.sum(self._window.astype(np.float64) ** 2)))
        self._history = np.zeros(o.n_fft, dtype=np.float32)  # the newest n_fft samples
        self._samples_in = 0
        self.frames_done = 0
        per_frame = lambda seconds: 1.0 - math.exp(-1.0 / (o.fps * seconds)) if seconds > 0 else 1.0
        self._attack = per_frame(o.attack_s)
        self._release = per_frame(o.release_s)
        self._normalise = per_frame(o.normalise_s)
        self._peak_decay = o.peak_decay_db_per_s / o.fps
        self._levels = np.full(max(1, round(o.floor_window_s * o.fps)), np.inf)
        self.noise_floor_dbfs = o.min_level_dbfs
        self.peak_dbfs = o.peak_start_dbfs
        self._analysed = 0
        self._f1 = [o.f1_start[0], o.f1_start[1] ** 2]  # running mean, variance
        self._f2 = [o.f2_start[0], o.f2_start[1] ** 2]
        self._mouth = np.zeros(len(VOWELS))
        self.openness = 0.0  # the last frame's target openness (before smoothing)
        self.blinker = Blinker(o)

    def _frame_end(self, frame: int) -> int:
        return (frame + 1) * self.options.sample_rate // self.options.fps

    def process(self, samples: np.ndarray, voiced=None) -> list[dict[str, float]]:
        """Samples continuing the stream -> the expressions of each frame they complete.

        ``voiced``: voice activity of those frames in order (missing entries count as
        voiced; None: all voiced, the level gates alone)."""
        o = self.options
        samples = np.asarray(samples, dtype=np.float32)
        start = self._samples_in - len(self._history)  # absolute index of buffer[0]
        buffer = np.concatenate([self._history, samples]) if len(samples) else self._history
        self._samples_in += len(samples)
        frames = []
        total = self._samples_in * o.fps // o.sample_rate
        for i, frame in enumerate(range(self.frames_done, total)):
            end = self._frame_end(frame) - start
            is_voiced = True if voiced is None or i >= len(voiced) else bool(voiced[i])
            frames.append(self._analyse(buffer[end - o.n_fft:end], is_voiced))
        self.frames_done = total
        self._history = buffer[-o.n_fft:].copy()
        return frames

    def skip(self, samples: np.ndarray) -> int:
        """Let audio pass without analysis (a caught-up stream): the mouth closes, blinks go on."""
        o = self.options
        samples = np.asarray(samples, dtype=np.float32)
        self._history = np.concatenate([self._history, samples])[-o.n_fft:]
        self._samples_in += len(samples)
        total = self._samples_in * o.fps // o.sample_rate
        skipped = total - self.frames_done
        self.frames_done = total
        self._mouth[:] = 0.0
        if skipped:
            self.blinker.step(skipped)
        return skipped

    def idle(self) -> dict[str, float]:
        """A frame without audio (the source is silent or gone): mouth closed, blinks go on."""
        self._mouth[:] = 0.0
        return self._expressions(self.blinker.step())

    def _analyse(self, piece: np.ndarray, voiced: bool) -> dict[str, float]:
        o = self.options
        spectrum = np.fft.rfft(piece * self._window)
        power = spectrum.real * spectrum.real + spectrum.imag * spectrum.imag
        voice, f1_energy, f1_moment, f2_energy, f2_moment = (power.astype(np.float32) @ self._bands).tolist()
        level = 10.0 * math.log10(voice * self._to_mean_square + 1e-12)
        self._levels[self._analysed % len(self._levels)] = level
        self._analysed += 1
        self.noise_floor_dbfs = max(float(self._levels.min()), o.min_level_dbfs)
        sounding = voiced and level > self.noise_floor_dbfs + o.floor_margin_db and level > o.min_level_dbfs
        target = np.zeros(len(VOWELS))
        openness = 0.0
        if sounding:
            self.peak_dbfs = max(level, self.peak_dbfs - self._peak_decay)
            f1 = f1_moment / f1_energy if f1_energy > 0 else self._f1[0]
            f2 = f2_moment / f2_energy if f2_energy > 0 else self._f2[0]
            z1 = self._update(self._f1, f1)
            z2 = self._update(self._f2, f2)
            openness = (level - (self.peak_dbfs - o.range_db)) / o.range_db
            openness = min(1.0, max(0.0, openness * (1.0 + o.f1_gain * max(-2.0, min(2.0, z1)))))
            distance = (_VOWEL_PLACES[:, 0] - z1) ** 2 + (_VOWEL_PLACES[:, 1] - z2) ** 2
            weight = np.exp(-(distance - distance.min()) / (2.0 * o.vowel_width ** 2))
            target = openness * weight / weight.sum()
        self.openness = openness
        rate = np.where(target > self._mouth, self._attack, self._release)
        self._mouth += rate * (target - self._mouth)
        self._mouth[self._mouth < o.closed_below] = 0.0
        total = float(self._mouth.sum())
        if total > 1.0:  # one shape rising while another releases: together at most fully open
            self._mouth /= total
        return self._expressions(self.blinker.step())

    def _update(self, stats: list[float], value: float) -> float:
        """Running mean and variance of a proxy; returns ``value`` in standard deviations."""
        mean, variance = stats
        z = (value - mean) / math.sqrt(variance)
        delta = value - mean
        stats[0] = mean + self._normalise * delta
        stats[1] = (1.0 - self._normalise) * (variance + self._normalise * delta * delta)
        stats[1] = max(stats[1], 1.0)
        return z

    def _expressions(self, blink: float) -> dict[str, float]:
        values = dict(zip(VOWELS, self._mouth.tolist()))
        values["blink"] = blink
        return values
