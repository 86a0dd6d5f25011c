"""A virtual microphone that PortAudio sees as a real input device.

A private PulseAudio daemon (its own HOME and XDG_RUNTIME_DIR under ``root``)
with a pipe source ``vmic`` and no other source or sink: a real daemon would move
a stream whose microphone vanished to another source (a sink's monitor), and then
the loss could not be provoked. A feeder process (hop.tools.virtual_mic_feeder)
writes 16-bit PCM into the source's FIFO at real-time pace: the audio fed to it,
silence otherwise, as a real microphone never stops delivering. Point PortAudio
at it by exporting ``env()`` and calling hop.engine.capture.rescan_devices();
its ALSA ``pulse`` and ``default`` devices then reach ``vmic``. Used by the
tests, the latency benchmark and the soak run; everything is stopped by PID.
Needs the Debian packages pulseaudio and pulseaudio-utils (setup.sh installs them).
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


def available() -> str | None:
    """None when a virtual microphone can run here, else the reason it cannot."""
    for binary in ("pulseaudio", "pactl"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (setup.sh installs pulseaudio and pulseaudio-utils)"
    return None


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
                 "-L", "module-native-protocol-unix"],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        deadline = time.monotonic() + 20
        while self._pactl("info", check=False).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                log_text = (self.root / "pulseaudio.log").read_text(errors="replace")
                raise RuntimeError(f"pulseaudio did not start:\n{log_text}")
            time.sleep(0.1)
        self.plug()
        self.feeder = subprocess.Popen([sys.executable, "-m", "hop.tools.virtual_mic_feeder", str(self.fifo)],
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
            if time.monotonic() > deadline:
                raise TimeoutError("the virtual microphone did not take the fed audio in time")
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
