"""WAV input: every PCM flavour, real-time and offline playback, and bad files."""

from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest

from hop.engine.audio_file import (AudioFileError, FileSource, FileSourceOptions, load_audio_16k_mono,
                                   read_audio_info)
from hop.engine.ring import RingOptions, SampleRing
from hop.engine.status import SourceState

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (setup.sh installs it)")


@pytest.fixture
def reference_wav(tmp_path, speech_source):
    """Two seconds of real speech as a 16 kHz 16-bit mono WAV, and its samples."""
    import wave

    speech = speech_source(2.0) * 0.7
    pcm = np.round(speech * 32767).astype("<i2")
    path = tmp_path / "speech16k.wav"
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(16000)
        file.writeframes(pcm.tobytes())
    return path, pcm.astype(np.float32) / 32768


@needs_sox
@pytest.mark.parametrize("sox_format, rate, channels, tolerance", [
    (["-b", "8", "-e", "unsigned-integer"], 16000, 1, 0.02),
    (["-b", "16"], 8000, 1, None),
    (["-b", "24"], 44100, 2, None),
    (["-b", "32", "-e", "signed-integer"], 48000, 2, None),
    (["-b", "32", "-e", "floating-point"], 22050, 1, None),
])
def test_wav_flavours_decode_to_the_same_16k_mono_speech(tmp_path, reference_wav, sox_format, rate, channels,
                                                         tolerance):
    source, reference = reference_wav
    converted = tmp_path / "converted.wav"
    subprocess.run(["sox", str(source), "-r", str(rate), "-c", str(channels), *sox_format, str(converted)],
                   check=True, capture_output=True)
    info = read_audio_info(converted)
    assert (info.sample_rate, info.channels) == (rate, channels)
    audio = load_audio_16k_mono(converted)
    assert audio.dtype == np.float32
    assert abs(len(audio) - len(reference)) < 40
    n = min(len(audio), len(reference))
    if tolerance is not None:  # same rate: only quantisation differs
        np.testing.assert_allclose(audio[:n], reference[:n], atol=tolerance)
    else:  # resampled twice (by sox, then by us): the speech band must survive
        band_limit = min(rate, 16000) / 2
        from scipy.signal import butter, sosfiltfilt
        lowpass = butter(8, 0.9 * band_limit, fs=16000, output="sos") if band_limit < 8000 else None
        expected = sosfiltfilt(lowpass, reference) if lowpass is not None else reference
        correlation = np.corrcoef(audio[200 : n - 200], expected[200 : n - 200])[0, 1]
        assert correlation > 0.98


def test_realtime_playback_is_paced_and_signals_the_end(reference_wav):
    path, reference = reference_wav
    ring = SampleRing(RingOptions(seconds=5))
    source = FileSource(FileSourceOptions(path=path), ring)
    began = time.perf_counter()
    source.start()
    time.sleep(1.0)
    halfway = ring.written
    assert source.finished.wait(5)
    elapsed = time.perf_counter() - began
    assert source.state == SourceState.FINISHED and not source.is_live
    assert 14000 < halfway < 18000, f"{halfway} samples after 1 s of real-time playback"
    assert 1.95 < elapsed < 2.5
    np.testing.assert_array_equal(ring.read(0, ring.written), reference[: ring.written])
    # Capture times follow the playback clock.
    assert ring.capture_time(16000) - ring.capture_time(0) == pytest.approx(1.0, abs=0.05)


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def test_bad_files_are_refused_with_what_they_are_and_how_to_convert(tmp_path, reference_wav):
    path, _ = reference_wav
    whole = path.read_bytes()
    with pytest.raises(AudioFileError, match="is empty"):
        read_audio_info(write_bytes(tmp_path / "empty.wav", b""))
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(200)
    with pytest.raises(AudioFileError, match="cannot be decoded .*MP3.*readable: WAV, FLAC.*ffmpeg"):
        read_audio_info(write_bytes(tmp_path / "song.wav", mp3))
    with pytest.raises(AudioFileError, match="MP3"):
        read_audio_info(write_bytes(tmp_path / "frames.wav", b"\xff\xfb\x90\x64" + bytes(200)))
    with pytest.raises(AudioFileError, match="MP4/M4A"):
        read_audio_info(write_bytes(tmp_path / "talk.m4a", b"\x00\x00\x00\x20ftypM4A " + bytes(200)))
    with pytest.raises(AudioFileError, match="WAV file whose header or data is damaged"):
        read_audio_info(write_bytes(tmp_path / "header.wav", whole[:30]))
    with pytest.raises(AudioFileError, match="no audio samples"):
        read_audio_info(write_bytes(tmp_path / "silent.wav", whole[:40] + b"\x00\x00\x00\x00"))
    with pytest.raises(AudioFileError, match="directory"):
        read_audio_info(tmp_path)
    # A recording cut short plays what it holds, and says so.
    cut = read_audio_info(write_bytes(tmp_path / "cut.wav", whole[: len(whole) // 2]))
    assert cut.frames > 0 and "truncated" in cut.note and "playing the" in cut.note, cut
    with pytest.raises(AudioFileError, match="no such file"):
        FileSource(FileSourceOptions(path=tmp_path / "missing.wav"), SampleRing())
