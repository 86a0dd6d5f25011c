"""Log-Mel features, one feature vector per pose frame, offline and streaming.

Pose frame ``t`` ends at sample ``(t + 1) * sample_rate // fps`` (exact integer
arithmetic, so 15 and 30 fps stay aligned with 16 kHz audio forever). Its
feature vector stacks ``subframes`` log-Mel spectra whose analysis windows end
``0, hop, 2*hop, ...`` samples before that point, so each pose frame sees the
most recent ``n_fft + (subframes - 1) * hop`` samples and nothing later.
Samples before the start of the signal count as silence.

Offline and streaming paths call the same ``_features_at`` on the same samples,
so they agree to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MelOptions:
    sample_rate: int = 16000
    fps: int = 30
    n_fft: int = 512
    n_mels: int = 64
    subframes: int = 4
    f_min: float = 40.0
    f_max: float = 7600.0
    # log(mel + floor) is mapped by (x - offset) / scale so speech lands near [-1, 1].
    log_floor: float = 1e-6
    log_offset: float = -5.0
    log_scale: float = 5.0

    @property
    def hop(self) -> int:
        return max(1, round(self.sample_rate / self.fps / self.subframes))

    @property
    def span(self) -> int:
        """Samples of history one pose frame depends on."""
        return self.n_fft + (self.subframes - 1) * self.hop

    @property
    def feature_dim(self) -> int:
        return self.n_mels * self.subframes

    def frame_end(self, t: np.ndarray | int) -> np.ndarray | int:
        return (np.asarray(t) + 1) * self.sample_rate // self.fps

    def frames_in(self, n_samples: int) -> int:
        """Number of complete pose frames in ``n_samples`` samples."""
        return n_samples * self.fps // self.sample_rate

    def samples_for(self, n_frames: int) -> int:
        """Fewest samples that complete ``n_frames`` frames (inverse of ``frames_in``)."""
        return -(-n_frames * self.sample_rate // self.fps)


def mel_filterbank(opts: MelOptions) -> np.ndarray:
    """Triangular filters on the HTK mel scale, area-normalised: (n_fft // 2 + 1, n_mels)."""

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    bin_hz = np.linspace(0.0, opts.sample_rate / 2, opts.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(opts.f_min), hz_to_mel(opts.f_max), opts.n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)  # equal area per filter
    return weights


class _Analysis:
    """Window and filterbank for one set of options, built once."""

    def __init__(self, opts: MelOptions):
        self.opts = opts
        self.window = np.hanning(opts.n_fft + 1)[:-1]
        self.filters = mel_filterbank(opts)
        # Offsets of every analysed sample relative to the frame's end sample.
        sub_ends = -np.arange(opts.subframes - 1, -1, -1) * opts.hop  # oldest subframe first
        self.offsets = sub_ends[:, None] + np.arange(-opts.n_fft, 0)[None, :]

    def features_at(self, signal: np.ndarray, signal_start: int, frame_ends: np.ndarray) -> np.ndarray:
        """Features of frames ending at ``frame_ends`` (absolute sample indices).

        ``signal[i]`` is absolute sample ``signal_start + i``; it must cover every
        analysed sample (the caller pads with silence before sample 0).
        """
        o = self.opts
        idx = frame_ends[:, None, None] + self.offsets[None] - signal_start
        frames = signal[idx] * self.window
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        mel = power @ self.filters
        logmel = (np.log(mel + o.log_floor) - o.log_offset) / o.log_scale
        return logmel.reshape(len(frame_ends), o.feature_dim).astype(np.float32)


def log_mel(audio: np.ndarray, opts: MelOptions = MelOptions()) -> np.ndarray:
    """Whole-signal features: (frames_in(len(audio)), feature_dim) float32."""
    audio = _as_mono_float(audio)
    analysis = _Analysis(opts)
    n_frames = opts.frames_in(len(audio))
    padded = np.concatenate([np.zeros(opts.span, dtype=np.float64), audio.astype(np.float64)])
    ends = np.asarray(opts.frame_end(np.arange(n_frames)), dtype=np.int64)
    return analysis.features_at(padded, -opts.span, ends)


class StreamingLogMel:
    """Push audio in any block sizes; get features of every pose frame it completes.

    The only state is the last ``span`` samples and the count of samples seen.
    """

    def __init__(self, opts: MelOptions = MelOptions()):
        self.opts = opts
        self._analysis = _Analysis(opts)
        self.reset()

    def reset(self) -> None:
        self.samples_seen = 0
        self.frames_emitted = 0
        self._history = np.zeros(self.opts.span, dtype=np.float64)  # samples [seen - span, seen)

    def silence_history(self) -> None:
        """Forget past audio but keep the sample clock (a stream restarting inside a batch)."""
        self._history[:] = 0.0

    def push(self, block: np.ndarray) -> np.ndarray:
        block = _as_mono_float(block).astype(np.float64)
        signal = np.concatenate([self._history, block])
        signal_start = self.samples_seen - len(self._history)
        self.samples_seen += len(block)
        n_ready = self.opts.frames_in(self.samples_seen) - self.frames_emitted
        ends = np.asarray(self.opts.frame_end(np.arange(self.frames_emitted, self.frames_emitted + n_ready)),
                          dtype=np.int64)
        features = self._analysis.features_at(signal, signal_start, ends)
        self.frames_emitted += n_ready
        self._history = signal[-self.opts.span:]
        return features

    def skip(self, block: np.ndarray) -> int:
        """Consume samples without computing features; returns the number of frames passed over."""
        block = _as_mono_float(block).astype(np.float64)
        self.samples_seen += len(block)
        n_ready = self.opts.frames_in(self.samples_seen) - self.frames_emitted
        self.frames_emitted += n_ready
        self._history = np.concatenate([self._history, block])[-self.opts.span:]
        return n_ready

    def frame_end_sample(self, frame: int) -> int:
        """Absolute index (exclusive) of the newest sample pose frame ``frame`` depends on."""
        return int(self.opts.frame_end(frame))


def _as_mono_float(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio as a 1-D array, got shape {audio.shape}; mix channels down first")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"expected float audio in [-1, 1], got {audio.dtype}; divide integer PCM by its full scale")
    return audio
