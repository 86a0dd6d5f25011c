"""The real capture path: PortAudio -> pulse -> virtual microphone -> MicCapture -> ring."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import sounddevice as sd

from hop.engine.capture import CaptureError, CaptureOptions, MicCapture, format_device_list, resolve_device
from hop.engine.ring import RingOptions, RingOverrun, SampleRing
from hop.engine.status import EngineStatus, SourceState


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def locate(needle: np.ndarray, haystack: np.ndarray) -> tuple[int, float]:
    """Offset of `needle` in `haystack` and the normalised correlation there."""
    from scipy.signal import correlate

    scores = correlate(haystack, needle, mode="valid", method="fft")
    offset = int(np.argmax(scores))
    window = haystack[offset : offset + len(needle)]
    peak = float(np.dot(window, needle) / (np.linalg.norm(window) * np.linalg.norm(needle) + 1e-12))
    return offset, peak


# At 16 kHz mono the path is bit-exact; at 48 kHz stereo PulseAudio resamples and
# up-mixes, our resampler converts back, and both filters shave the band edge.
@pytest.mark.parametrize("rate, channels, min_correlation", [(16000, 1, 0.9999), (48000, 2, 0.99)])
def test_speech_fed_to_the_virtual_mic_arrives_in_the_ring(virtual_mic, speech_source, rate, channels,
                                                           min_correlation):
    speech = speech_source(3.0) * 0.8
    ring = SampleRing(RingOptions(seconds=20))
    capture = MicCapture(CaptureOptions(device="pulse", samplerate=rate, channels=channels, block_s=0.01),
                         ring)
    capture.start()
    try:
        wait_until(lambda: ring.written > 3200, 15, "the stream to deliver audio")
        virtual_mic.feed(speech)
        fed_at = virtual_mic.wait_drained(15)
        wait_until(lambda: ring.written > 0 and ring.capture_time(ring.written - 1) > fed_at + 3.3,
                   10, "the fed speech to pass through")
        received = ring.read(ring.oldest_available, ring.written)
    finally:
        capture.stop()
    assert capture.state == SourceState.STOPPED
    quantised = np.round(speech * 32767) / 32767
    offset, peak = locate(quantised, received)
    assert peak > min_correlation, f"fed speech not found intact in the capture (correlation {peak:.5f})"
    window = received[offset : offset + len(speech)]
    level_ratio = np.sqrt(np.mean(window**2) / np.mean(quantised**2))
    assert abs(level_ratio - 1) < 0.02
    # Silence on both sides: the speech arrived once, not stretched or repeated.
    assert np.abs(received[offset + len(speech) + 160 :]).max(initial=0) < 1e-3
    # The capture time of the speech's first sample is when it was written to the FIFO,
    # give or take the pulse and ALSA buffering.
    delay = ring.capture_time(ring.oldest_available + offset) - fed_at
    assert -0.05 < delay < 0.5, f"capture timestamp {delay * 1000:.0f} ms off the feed time"
    assert capture.overflows == 0


def test_device_loss_is_reported_and_capture_recovers(virtual_mic, speech_source):
    ring = SampleRing(RingOptions(seconds=20))
    capture = MicCapture(CaptureOptions(device="pulse", stall_timeout_s=0.5, retry_initial_s=0.2,
                                        retry_max_s=0.5), ring)
    status = EngineStatus()
    capture.start()
    try:
        wait_until(lambda: ring.written > 8000, 15, "the stream to deliver audio")
        assert capture.is_live
        virtual_mic.unplug()
        wait_until(lambda: capture.state == SourceState.LOST, 10, "the loss to be noticed")
        capture.publish(status)
        assert status.snapshot()["source"]["state"] == "lost"
        assert "lost" in status.status_line()
        time.sleep(1.0)  # several failed retries while the device is gone
        assert not capture.is_live and "retrying" in capture.message
        virtual_mic.plug()
        wait_until(lambda: capture.is_live, 15, "the device to be re-opened")
        before = ring.written
        speech = speech_source(1.0) * 0.5
        virtual_mic.feed(speech)
        virtual_mic.wait_drained(10)
        wait_until(lambda: ring.written > before + len(speech) + 3200, 10, "audio after recovery")
        _, peak = locate(np.round(speech * 32767) / 32767, ring.read(before, ring.written))
    finally:
        capture.stop()
    assert capture.losses >= 1
    assert peak > 0.999, "audio after the device returned is not the fed speech"


def test_starved_reader_gets_overruns_counted_and_capture_keeps_running(virtual_mic):
    """Hold the GIL for over a second (starving callback and reader) with a 0.1 s ring."""
    ring = SampleRing(RingOptions(seconds=0.1))
    capture = MicCapture(CaptureOptions(device="pulse", samplerate=16000, channels=1, stall_timeout_s=5.0),
                         ring)
    capture.start()
    old_interval = sys.getswitchinterval()
    try:
        wait_until(lambda: ring.written > 3200, 15, "the stream to deliver audio")
        reader_position = ring.written
        starved_at = time.perf_counter()
        sys.setswitchinterval(5.0)  # this thread keeps the GIL: the audio callback cannot run
        try:
            while time.perf_counter() < starved_at + 1.2:
                pass
        finally:
            sys.setswitchinterval(old_interval)
        time.sleep(0.5)
        with pytest.raises(RingOverrun) as overrun:
            ring.read(reader_position, reader_position + 1600)
        # The reader resumes from the oldest sample still held.
        resumed = ring.read(overrun.value.oldest_available, ring.written)
        elapsed = time.perf_counter() - starved_at
        samples_since = ring.written - reader_position
        assert capture.is_live, "the stream must survive a starved callback"
        status = EngineStatus()
        capture.publish(status)
        status.ring_overruns = ring.reader_overruns
        snapshot = status.snapshot()
    finally:
        sys.setswitchinterval(old_interval)
        capture.stop()
    assert len(resumed) > 0
    assert snapshot["ring_overruns"] == 1
    assert "overruns 1" in status.status_line()
    # The device side buffered through the stall: no audio was lost, only the reader fell behind.
    assert samples_since > (elapsed - 0.3) * 16000


def test_portaudio_input_overflow_flag_is_counted(virtual_mic):
    """PulseAudio buffers seconds of input, so its stream never raises the flag itself;
    hand the real callback a real PortAudio flags object with input overflow set."""
    ring = SampleRing(RingOptions(seconds=1))
    capture = MicCapture(CaptureOptions(device="pulse", samplerate=16000, channels=1), ring)
    capture.start()
    try:
        wait_until(lambda: ring.written > 1600, 15, "the stream to deliver audio")
    finally:
        capture.stop()  # the ring has one producer: call the callback only once the stream is gone
    written = ring.written
    time_info = type("TimeInfo", (), {"currentTime": 0.0, "inputBufferAdcTime": 0.0})()
    overflow = sd.CallbackFlags(sd._lib.paInputOverflow)
    capture._callback(np.zeros((160, 1), np.float32), 160, time_info, overflow)
    status = EngineStatus()
    capture.publish(status)
    assert ring.written == written + 160, "the block that came with the flag is still kept"
    assert status.snapshot()["input_overflows"] == 1
    assert "overflows 1" in status.status_line()


def test_unknown_device_names_the_fix(virtual_mic):
    with pytest.raises(CaptureError, match="no input device named 'no-such-mic'.*--list-devices"):
        resolve_device("no-such-mic")
    with pytest.raises(CaptureError, match="no input device with index 999"):
        resolve_device(999)
    assert resolve_device("PULSE").name == "pulse"  # case-insensitive substring
    assert "pulse" in format_device_list()
