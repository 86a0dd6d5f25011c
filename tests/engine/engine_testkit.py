"""Helpers shared by the engine tests (imported by name: pytest puts this folder on sys.path)."""

from pathlib import Path

import numpy as np
import soundfile


class ListSink:
    """An output that keeps every frame it is sent, in order."""

    def __init__(self):
        self.frames = []

    def send(self, frame):
        self.frames.append(frame)

    def close(self):
        pass

    def stats(self):
        return {"sent": len(self.frames), "dropped": 0, "errors": 0, "last_error": ""}


def write_wav(path: Path, audio: np.ndarray, rate: int = 16_000) -> Path:
    """16-bit PCM mono WAV of float samples (clipped to full scale)."""
    soundfile.write(path, np.clip(audio, -1.0, 32767 / 32768), rate, subtype="PCM_16")
    return path
