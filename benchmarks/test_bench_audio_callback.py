"""What the audio callback costs per block (pytest-benchmark; run with --benchmark-enable).

The callback mixes, resamples and sanitises one block with numba-compiled loops over
preallocated buffers. The comparison case does the same resampling work with
scipy.signal.resample_poly on each block (allocating, not stateful): the figure that
justifies numba on this path. A 10 ms block of 48 kHz stereo, the commonest device format.
"""

import numpy as np
from scipy.signal import resample_poly

from hop.engine.resample import StreamingResampler
from hop.engine.sanitize import AudioSanitizer

RATE, CHANNELS, BLOCK = 48000, 2, 480


def _block():
    rng = np.random.default_rng(0)
    return rng.uniform(-0.5, 0.5, (BLOCK, CHANNELS)).astype(np.float32)


def _tone(blocks: int) -> np.ndarray:
    """A 440 Hz stereo tone (the channels differ in level and phase), ``blocks`` blocks long."""
    t = np.arange(blocks * BLOCK) / RATE
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t + 0.3)
    return np.stack([left, right], axis=1).astype(np.float32)


def test_callback_resample_numba(benchmark):
    # The streamed blocks give what scipy gives for the whole signal at once: the two
    # timed cases below do the same job.
    resampler = StreamingResampler(RATE, CHANNELS, max_block_frames=BLOCK)
    tone = _tone(40)
    streamed = np.concatenate([resampler.process(tone[i:i + BLOCK]).copy() for i in range(0, len(tone), BLOCK)])
    whole = resample_poly(tone.mean(axis=1), 1, 3)
    assert len(whole) - len(streamed) <= 16  # what is still in the filter's look-ahead
    assert np.abs(streamed[100:] - whole[100:len(streamed)]).max() < 1e-4
    block = _block()
    out = benchmark(resampler.process, block)
    assert len(out) == 160


def test_callback_resample_scipy_per_block(benchmark):
    block = _block()
    out = benchmark(lambda: resample_poly(block.mean(axis=1), 1, 3))
    assert len(out) == 160


def test_callback_sanitize_numba(benchmark):
    sanitizer = AudioSanitizer()
    samples = _block()[:, 0][:160].copy()
    samples[[3, 50, 90]] = [np.nan, np.inf, 1e-42]  # the faults the callback must not pass on
    clean = samples.copy()
    out = benchmark(sanitizer.process, clean)
    assert np.isfinite(out).all() and np.abs(out).max() < 2.0
    assert sanitizer.counts.nonfinite_samples >= 2 and sanitizer.counts.denormal_samples >= 1
