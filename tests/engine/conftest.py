"""Fixtures for the engine tests: a real virtual microphone and real speech.

`virtual_mic` runs a private PulseAudio daemon (its own HOME and XDG_RUNTIME_DIR
in a tmp dir) with a pipe source `vmic`. A feeder process (engine_mic_feeder.py)
writes 16-bit PCM into the source's FIFO at real-time pace: fed speech when there
is some, silence otherwise, as a real microphone never stops delivering. PortAudio is
re-initialised after the environment points at the daemon, so its ALSA `pulse`
and `default` devices reach `vmic`. The daemon is stopped by its own PID.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hop.engine.audio_file import load_wav_16k_mono
from hop.engine.capture import rescan_devices

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SPEECH = REPO_ROOT.parent / "shared" / "data" / "speech" / "ljspeech"
FEEDER = Path(__file__).with_name("engine_mic_feeder.py")
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
    return load_wav_16k_mono(wav)


def load_speech(seconds: float, tmp_dir: Path) -> np.ndarray:
    """Exactly `seconds` of real speech at 16 kHz: LJSpeech when present, espeak-ng otherwise."""
    clips = sorted(SHARED_SPEECH.glob("*.wav")) if SHARED_SPEECH.is_dir() else []
    pieces, total = [], 0
    for clip in clips:
        pieces.append(load_wav_16k_mono(clip))
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
            audio = load_wav_16k_mono(clip) if clip.is_file() else np.zeros(0, np.float32)
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


class VirtualMic:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.runtime = root / "run"
        self.fifo = root / "vmic.fifo"
        self.daemon: subprocess.Popen | None = None
        self.feeder: subprocess.Popen | None = None
        self.module_id: str | None = None
        self.clips_fed = 0
        # perf_counter times (the clock is system-wide) at which clips started / ended.
        self.clip_starts: list[float] = []
        self.clip_ends: list[float] = []

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "PULSE_SERVER": f"unix:{self.runtime / 'pulse' / 'native'}",
            "PULSE_RUNTIME_PATH": str(self.runtime / "pulse"),
            "PULSE_SOURCE": "vmic",
        }

    def start(self) -> None:
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        env = {**os.environ, **self.env()}
        with open(self.root / "pulseaudio.log", "wb") as log:
            self.daemon = subprocess.Popen(
                ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1",
                 "-L", "module-native-protocol-unix",
                 "-L", "module-null-sink sink_name=vsink rate=16000 channels=1 format=s16le"],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + 20
        while self._pactl("info", check=False).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                log_text = (self.root / "pulseaudio.log").read_text(errors="replace")
                raise RuntimeError(f"pulseaudio did not start:\n{log_text}")
            time.sleep(0.1)
        self.plug()
        self.feeder = subprocess.Popen([sys.executable, str(FEEDER), str(self.fifo)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False)
        threading.Thread(target=self._read_feeder_events, daemon=True).start()

    def _read_feeder_events(self) -> None:
        for line in self.feeder.stdout:
            kind, when = line.decode().split()
            (self.clip_starts if kind == "start" else self.clip_ends).append(float(when))

    def _pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env={**os.environ, **self.env()},
                              capture_output=True, text=True, check=check, timeout=15)

    def plug(self) -> None:
        """Create the `vmic` source (the module creates the FIFO itself)."""
        self.module_id = self._pactl(
            "load-module", "module-pipe-source", "source_name=vmic", f"file={self.fifo}",
            "format=s16le", "rate=16000", "channels=1").stdout.strip()

    def unplug(self) -> None:
        """Remove the source, as if the microphone's cable were pulled."""
        self._pactl("unload-module", self.module_id)
        self.module_id = None
        self.fifo.unlink(missing_ok=True)  # the module leaves it behind and refuses to reuse it

    def feed(self, samples: np.ndarray) -> None:
        """Queue float samples in [-1, 1]; the feeder writes them at real-time pace."""
        pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2").tobytes()
        self.feeder.stdin.write(struct.pack("<I", len(pcm)) + pcm)
        self.feeder.stdin.flush()
        self.clips_fed += 1

    def wait_drained(self, timeout: float) -> float:
        """Wait until every fed clip was written; returns when the last one started."""
        deadline = time.monotonic() + timeout
        while len(self.clip_ends) < self.clips_fed:
            assert time.monotonic() < deadline, "the virtual microphone did not take the fed audio in time"
            time.sleep(0.02)
        return self.clip_starts[-1]

    def stop(self) -> None:
        for process in (self.feeder, self.daemon):  # each by its own PID, never by name
            if process is None or process.poll() is not None:
                continue
            if process is self.feeder:
                process.stdin.close()  # EOF asks the feeder to exit
            else:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def virtual_mic(tmp_path, monkeypatch):
    for binary in ("pulseaudio", "pactl"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (setup.sh installs pulseaudio and pulseaudio-utils)")
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
