"""Sample ring (overrun detection, capture times) and the streaming resampler."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.signal import resample_poly

from hop.engine.resample import StreamingResampler
from hop.engine.ring import RingOptions, RingOverrun, SampleRing


def test_ring_returns_spans_across_the_wrap_and_reports_overwritten_ones():
    ring = SampleRing(RingOptions(seconds=0.1))  # 1600 samples
    signal = np.arange(5000, dtype=np.float32)
    for start in range(0, 5000, 700):
        ring.write(signal[start : start + 700], end_capture_time=start / 16000)
    assert ring.written == 5000
    np.testing.assert_array_equal(ring.read(3500, 5000), signal[3500:5000])  # crosses the wrap
    with pytest.raises(RingOverrun) as overrun:
        ring.read(3000, 3500)
    assert overrun.value.oldest_available == 5000 - 1600
    assert ring.reader_overruns == 1
    with pytest.raises(ValueError, match="only 5000 written"):
        ring.read(4900, 5100)


def test_capture_time_of_any_sample_follows_the_block_anchors():
    ring = SampleRing(RingOptions(seconds=1))
    ring.write(np.zeros(160, np.float32), end_capture_time=10.0)
    ring.write(np.zeros(320, np.float32), end_capture_time=10.5)  # a later block, after a gap
    assert ring.capture_time(0) == pytest.approx(10.0 - 160 / 16000)
    assert ring.capture_time(159) == pytest.approx(10.0 - 1 / 16000)
    assert ring.capture_time(160) == pytest.approx(10.5 - 320 / 16000)
    assert ring.capture_time(479) == pytest.approx(10.5 - 1 / 16000)


def test_concurrent_reader_never_gets_a_torn_span():
    """A producer thread overwrites a small ring as fast as it can; every span the
    reader gets back is a run of consecutive sample indices, or an overrun."""
    ring = SampleRing(RingOptions(seconds=0.05))  # 800 samples
    stop = threading.Event()

    wrap = 2**20  # sample values are their indices modulo this: exact in float32

    def produce():
        block = np.arange(100)
        start = 0
        while not stop.is_set():
            ring.write(((block + start) % wrap).astype(np.float32), end_capture_time=0.0)
            start += 100

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    good = overruns = 0
    deadline = time.monotonic() + 20  # the reader keeps going until it has checked enough spans
    try:
        while good < 200 and time.monotonic() < deadline:
            newest = ring.written
            if newest < 800:
                continue
            start = newest - 700
            try:
                span = ring.read(start, start + 600)
            except RingOverrun:
                overruns += 1
                continue
            np.testing.assert_array_equal(span, (np.arange(start, start + 600) % wrap).astype(np.float32))
            good += 1
    finally:
        stop.set()
        producer.join(timeout=5)
    assert good >= 200, f"only {good} spans read back ({overruns} overruns) while the producer ran"


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 1), (48000, 2), (44100, 2), (16000, 1)])
def test_streaming_resampler_matches_offline_resample_poly(rate, channels):
    rng = np.random.default_rng(rate + channels)
    audio = rng.uniform(-1, 1, (rate * 2, channels)).astype(np.float32)
    resampler = StreamingResampler(rate, channels, max_block_frames=2048)
    pieces, position = [], 0
    while position < len(audio):  # irregular block sizes, as callbacks may deliver
        size = int(rng.integers(1, 2048))
        pieces.append(resampler.process(audio[position : position + size]).copy())
        position += size
    streamed = np.concatenate(pieces)
    offline = resample_poly(audio.mean(axis=1).astype(np.float64), resampler.up, resampler.down)
    # The stream holds back only the filter's look-ahead at its end.
    assert len(offline) - 32 <= len(streamed) <= len(offline)
    np.testing.assert_allclose(streamed, offline[: len(streamed)], atol=1e-5)
    assert 0 <= resampler.lag_seconds < 0.002


def test_resampled_tone_keeps_its_frequency_and_level():
    rate = 44100
    t = np.arange(rate) / rate
    left = np.sin(2 * np.pi * 1000 * t)
    stereo = np.stack([left, left], axis=1).astype(np.float32)
    resampler = StreamingResampler(rate, 2, 441)
    out = np.concatenate([resampler.process(stereo[i : i + 441]).copy() for i in range(0, rate, 441)])
    spectrum = np.abs(np.fft.rfft(out[1000:15000] * np.hanning(14000)))
    peak_hz = np.argmax(spectrum) * 16000 / 14000
    assert abs(peak_hz - 1000) < 2
    assert np.sqrt(np.mean(out[1000:15000] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.01)


def test_resampler_refuses_wrong_blocks():
    resampler = StreamingResampler(48000, 2, 480)
    with pytest.raises(ValueError, match="exceeds"):
        resampler.process(np.zeros((481, 2), np.float32))
    with pytest.raises(ValueError, match="expected"):
        resampler.process(np.zeros((480, 1), np.float32))
