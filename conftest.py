"""Fixtures shared by tests/ and benchmarks/: the default LM, real speech, a virtual microphone.

`virtual_mic` is hop.tools.virtual_mic.VirtualMic (a private PulseAudio daemon with a pipe
source fed at real-time pace) in a tmp dir, with PortAudio re-initialised so that its
`pulse` and `default` devices reach it. Speech is LJSpeech from ../shared/data when it is
there, espeak-ng otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from hop.model import FrozenLM, Hop, HopConfig

from hop.engine.audio_file import load_audio_16k_mono
from hop.engine.capture import rescan_devices
from hop.tools.virtual_mic import VirtualMic, available

REPO_ROOT = Path(__file__).resolve().parent
SHARED_SPEECH = REPO_ROOT.parent / "shared" / "data" / "speech" / "ljspeech"
SAMPLE_RATE = 16_000

ESPEAK_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Every morning I walk to the station and buy a newspaper. "
    "Please hand me the red book on the table."
)


def espeak_speech(tmp_dir: Path) -> np.ndarray:
    """ESPEAK_TEXT spoken by espeak-ng, at 16 kHz (the fallback when ../shared/data is absent)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("no speech data: ../shared/data is absent and espeak-ng is not installed (run setup.sh)")
    wav = tmp_dir / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), ESPEAK_TEXT], check=True, capture_output=True)
    return load_audio_16k_mono(wav)


def load_speech(seconds: float, tmp_dir: Path) -> np.ndarray:
    """Exactly `seconds` of real speech at 16 kHz: LJSpeech when present, espeak-ng otherwise."""
    clips = sorted(SHARED_SPEECH.glob("*.wav")) if SHARED_SPEECH.is_dir() else []
    pieces, total = [], 0
    for clip in clips:
        pieces.append(load_audio_16k_mono(clip))
        total += len(pieces[-1])
        if total >= seconds * SAMPLE_RATE:
            break
    speech = np.concatenate(pieces) if pieces else espeak_speech(tmp_dir)
    while len(speech) < seconds * SAMPLE_RATE:
        speech = np.concatenate([speech, speech])
    return speech[: int(seconds * SAMPLE_RATE)].astype(np.float32)


def load_speech_with_text(min_seconds: float, max_clip_seconds: float, tmp_dir: Path) -> tuple[np.ndarray, str]:
    """Whole LJSpeech clips (each at most `max_clip_seconds`) with their transcript, or espeak-ng."""
    metadata = SHARED_SPEECH / "metadata.csv"
    pieces, words = [], []
    if metadata.is_file():
        for line in metadata.read_text().splitlines():
            clip_id, _, text = line.split("|")
            clip = SHARED_SPEECH / f"{clip_id}.wav"
            audio = load_audio_16k_mono(clip) if clip.is_file() else np.zeros(0, np.float32)
            if 0 < len(audio) <= max_clip_seconds * SAMPLE_RATE:
                pieces += [audio, np.zeros(SAMPLE_RATE // 4, np.float32)]
                words.append(text)
            if sum(map(len, pieces)) >= min_seconds * SAMPLE_RATE:
                break
    if not pieces:
        return espeak_speech(tmp_dir), ESPEAK_TEXT
    return np.concatenate(pieces), " ".join(words)


@pytest.fixture
def speech_source(tmp_path):
    """A function returning `seconds` of real 16 kHz speech."""
    return lambda seconds: load_speech(seconds, tmp_path)


@pytest.fixture
def speech_with_text(tmp_path):
    """A function returning (about `min_seconds` of 16 kHz speech, its transcript)."""
    return lambda min_seconds, max_clip_seconds=8.0: load_speech_with_text(min_seconds, max_clip_seconds,
                                                                           tmp_path)


@pytest.fixture
def virtual_mic(tmp_path, monkeypatch):
    reason = available()
    if reason:
        pytest.skip(reason)
    mic = VirtualMic(tmp_path / "pulse")
    mic.root.mkdir()
    try:
        mic.start()
        for key, value in mic.env().items():
            monkeypatch.setenv(key, value)
        rescan_devices()  # PortAudio must see the daemon through the new environment
        yield mic
    finally:
        mic.stop()
        rescan_devices()


@pytest.fixture(scope="session")
def default_lm() -> FrozenLM:
    """The real default LM (all-MiniLM-L6-v2 from its PyPI package), loaded once."""
    return FrozenLM()


@pytest.fixture(scope="module")
def one_torch_thread():
    """As hop-live runs the model (EngineSettings.threads = 1): on a shared 2-core machine a
    second OpenMP thread spin-waiting for a descheduled partner turns ms into 100s of ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def streaming_model(default_lm):
    """hop-live's default architecture with the real LM, untrained (timing does not depend on weights)."""
    torch.manual_seed(0)
    return Hop(HopConfig(), lm=default_lm).eval()


@pytest.fixture(scope="module")
def paper_model(default_lm):
    """The paper's offline mode (bidirectional, 15 fps windows), untrained."""
    torch.manual_seed(0)
    return Hop(HopConfig(causal=False, fps=15), lm=default_lm).eval()


@pytest.fixture(scope="module")
def small_untrained_model(one_torch_thread):
    """A small untrained causal model (no LM): enough for timing, wiring and state behaviour."""
    torch.manual_seed(0)
    return Hop(HopConfig(n_prototypes=32)).eval()
