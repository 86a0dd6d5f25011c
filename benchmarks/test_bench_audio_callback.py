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


def test_callback_resample_numba(benchmark):
    resampler = StreamingResampler(RATE, CHANNELS, max_block_frames=BLOCK)
    block = _block()
    resampler.process(block)  # the first block also fills the filter's look-ahead
    out = benchmark(resampler.process, block)
    assert len(out) == 160


def test_callback_resample_scipy_per_block(benchmark):
    block = _block()
    out = benchmark(lambda: resample_poly(block.mean(axis=1), 1, 3))
    assert len(out) == 160


def test_callback_sanitize_numba(benchmark):
    sanitizer = AudioSanitizer()
    samples = _block()[:, 0][:160].copy()
    out = benchmark(sanitizer.process, samples)
    assert np.isfinite(out).all()
