"""Audio sanitiser counters and the voice-activity detector on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from hop.engine.sanitize import AudioSanitizer, SanitizerOptions
from hop.engine.status import EngineStatus
from hop.engine.vad import VadOptions, VoiceActivityDetector


def run_blocks(sanitizer: AudioSanitizer, audio: np.ndarray, block: int = 533) -> np.ndarray:
    audio = audio.astype(np.float32).copy()
    for start in range(0, len(audio), block):
        sanitizer.process(audio[start : start + block])
    return audio


def test_nan_and_inf_become_silence_and_are_counted(speech_source):
    speech = speech_source(1.0) * 0.5
    speech[[100, 2000, 9000]] = [np.nan, np.inf, -np.inf]
    sanitizer = AudioSanitizer()
    cleaned = run_blocks(sanitizer, speech)
    assert np.isfinite(cleaned).all()
    assert sanitizer.counts.nonfinite_samples == 3
    status = EngineStatus()
    status.sanitizer = sanitizer.counts.as_dict()
    assert "fixed 3" in status.status_line()


def test_denormals_are_flushed_and_counted():
    tiny = np.full(1000, 1e-40, dtype=np.float32)  # float32 subnormals
    assert np.all(tiny != 0)
    sanitizer = AudioSanitizer()
    cleaned = run_blocks(sanitizer, tiny)
    assert np.all(cleaned == 0)
    assert sanitizer.counts.denormal_samples == 1000


def test_dc_offset_is_removed_and_reported(speech_source):
    speech = speech_source(2.0) * 0.3
    sanitizer = AudioSanitizer()
    cleaned = run_blocks(sanitizer, speech + 0.2)
    settled = cleaned[8000:]  # after the high-pass has settled (10 Hz corner: ~16 ms)
    assert abs(settled.mean()) < 0.005
    assert sanitizer.counts.dc_offset == pytest.approx(0.2, abs=0.02)
    # Speech itself passes: the band above 10 Hz is untouched.
    correlation = np.corrcoef(settled, speech[8000:])[0, 1]
    assert correlation > 0.99


def test_clipped_audio_is_counted(speech_source):
    speech = speech_source(1.0)
    loud = np.clip(speech * 40, -1, 1)
    sanitizer = AudioSanitizer()
    run_blocks(sanitizer, loud)
    expected = int(np.count_nonzero(np.abs(loud.astype(np.float32)) >= 0.999))
    assert expected > 100
    assert sanitizer.counts.clipped_samples == expected
    quiet = AudioSanitizer()
    run_blocks(quiet, speech * 0.5)
    assert quiet.counts.clipped_samples == 0


def test_sanitizer_rejects_bad_options_and_input():
    with pytest.raises(ValueError, match="dc_cutoff_hz"):
        AudioSanitizer(SanitizerOptions(dc_cutoff_hz=9000))
    with pytest.raises(ValueError, match="float32"):
        AudioSanitizer().process(np.zeros(10, dtype=np.float64))


def frames_of(vad: VoiceActivityDetector, audio: np.ndarray, block: int = 700) -> np.ndarray:
    return np.concatenate([vad.process(audio[i : i + block]) for i in range(0, len(audio), block)])


def test_vad_follows_speech_with_inserted_silences(speech_source):
    rng = np.random.default_rng(3)
    speech = speech_source(6.0)
    pieces, truth = [], []
    for part in np.array_split(speech, 3):
        pieces += [np.zeros(24000, np.float32), part]
        truth += [np.zeros(24000, bool), np.ones(len(part), bool)]
    pieces.append(np.zeros(24000, np.float32))
    truth.append(np.zeros(24000, bool))
    audio = np.concatenate(pieces) + rng.normal(0, 10 ** (-60 / 20), sum(map(len, pieces)))
    truth = np.concatenate(truth)
    vad = VoiceActivityDetector()
    decisions = frames_of(vad, audio.astype(np.float32))
    assert len(decisions) == int(len(audio) / 16000 * 30)
    frame_truth = truth[(np.arange(len(decisions)) * 16000) // 30]
    # Inside a silence, past the hangover, the detector must be quiet.
    settled_silence = frame_truth.copy()
    for shift in range(1, 16):
        settled_silence |= np.roll(frame_truth, shift)
    assert decisions[~settled_silence].mean() < 0.02
    # Speech is detected nearly throughout (short pauses are bridged by the hangover).
    assert decisions[frame_truth].mean() > 0.85


def test_vad_adapts_to_steady_background_noise(speech_source):
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 10 ** (-35 / 20), 16000 * 8).astype(np.float32)  # a loud fan
    speech = speech_source(2.0)
    vad = VoiceActivityDetector()
    decisions = frames_of(vad, np.concatenate([noise, noise[:32000] + speech]))
    assert not decisions[30 * 4 : 30 * 8].any(), "steady noise still counted as speech after 4 s"
    assert decisions[30 * 8 :].mean() > 0.7, "speech above the noise was missed"


def test_vad_never_speaks_on_digital_silence():
    vad = VoiceActivityDetector(VadOptions(frame_rate=15))
    assert not frames_of(vad, np.zeros(16000 * 2, np.float32)).any()
