from pathlib import Path

import numpy as np
import pytest

from hop.model.frontend import MelOptions, StreamingLogMel, log_mel

SPEECH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "beat2" / "2_scott_0_1_1.wav"


def _synthetic_speech_like() -> np.ndarray:
    """Voiced bursts over a noise floor, used when ../shared/data is absent."""
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 12) / 16000
    bursts = (np.sin(2 * np.pi * 2.3 * t) > 0.3).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * bursts + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _read_float_wav(path: Path) -> np.ndarray:
    from scipy.io import wavfile

    rate, data = wavfile.read(path)
    assert rate == 16000
    return data.astype(np.float32)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    if SPEECH.exists():
        return _read_float_wav(SPEECH)[: 16000 * 20]
    return _synthetic_speech_like()


@pytest.mark.parametrize("fps", [15, 30])
def test_streaming_equals_offline_over_whole_file(audio, fps):
    opts = MelOptions(fps=fps)
    offline = log_mel(audio, opts)
    stream = StreamingLogMel(opts)
    rng = np.random.default_rng(fps)
    parts, pos = [], 0
    while pos < len(audio):
        n = int(rng.choice([1, 7, 160, 533, 1066, 4000, 12345]))
        parts.append(stream.push(audio[pos:pos + n]))
        pos += n
    streamed = np.concatenate(parts)
    assert streamed.shape == offline.shape == (len(audio) * fps // 16000, opts.feature_dim)
    assert np.abs(streamed - offline).max() <= 1e-5


def test_frame_boundaries_are_exact_integers():
    opts = MelOptions(fps=30)
    # 30 fps at 16 kHz: 533.33 samples per frame, never drifting.
    assert [opts.frame_end(t) for t in range(3)] == [533, 1066, 1600]
    assert opts.frame_end(29_999) == 16_000_000


def test_features_respond_to_loudness_and_are_causal():
    opts = MelOptions(fps=30)
    silent = np.zeros(16000, dtype=np.float32)
    loud = silent.copy()
    loud[8000:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    f_silent, f_loud = log_mel(silent, opts), log_mel(loud, opts)
    first_affected = 8000 * 30 // 16000  # frames ending before sample 8000 must not change
    assert np.array_equal(f_silent[:first_affected], f_loud[:first_affected])
    assert f_loud[first_affected + 2:].max(axis=1).min() > f_silent.max() + 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 1000), dtype=np.float32))
    with pytest.raises(ValueError, match="full scale"):
        log_mel(np.zeros(1000, dtype=np.int16))
