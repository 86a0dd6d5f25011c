"""Audio files: `--input FILE` played at real-time pace, and whole files for offline conversion.

Decoding is libsndfile's (the ``soundfile`` package): WAV of every common encoding,
FLAC, OGG/Vorbis, Opus and MP3, any rate and channel count, the format found from
the file's content (an MP3 named .wav decodes). Blocks go through the same
streaming resampler as the microphone. A file that cannot be used is refused with
one line naming what it is and what would work; a recording cut short (its
header promises more than the file holds) plays what it holds and says so.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from hop.engine.resample import TARGET_RATE, StreamingResampler
from hop.engine.ring import SampleRing
from hop.engine.status import SourceState

READABLE = "WAV, FLAC, OGG/Vorbis, Opus or MP3"
_CONVERT_HINT = "convert it with: ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav"


class AudioFileError(ValueError):
    """The file cannot be used as input; the message names the fix."""


# What a recording may claim and still be audio this engine can use. A header outside these
# (1 Hz, 4 GHz, 65,535 channels) is a damaged or hostile file: refused before anything is read.
SAMPLE_RATES = (1_000, 768_000)  # Hz
MAX_CHANNELS = 64


def check_audio_format(rate: float, channels: int = 1) -> None:
    """Raise AudioFileError unless ``rate`` Hz and ``channels`` are a usable audio format.

    Independent of how the audio is read: the WAV reader here, a microphone's --samplerate,
    any other decoder's header all go through it."""
    low, high = SAMPLE_RATES
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not low <= rate <= high:
        raise AudioFileError(f"a sample rate of {rate!r} Hz is not usable audio (accepted: {low}..{high} Hz)")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise AudioFileError(f"{channels!r} channels is not usable audio (accepted: 1..{MAX_CHANNELS} channels)")


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str  # libsndfile's names, e.g. "WAV PCM_16", "MP3 MPEG_LAYER_III"
    note: str = ""  # what the reader had to work around (a truncated file), for the user

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def read_audio_info(path: str | Path) -> AudioInfo:
    """What the file holds; raises AudioFileError (one line: what it is, what works) if unusable."""
    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"{path} is a directory, not an audio file")
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if not path.is_file():
        raise AudioFileError(f"{path} is not a regular file (a device or a pipe?); give an audio file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path} is empty (0 bytes); record or export the audio again")
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        detail = str(error).split(": ", 1)[-1].strip()
        raise AudioFileError(f"{path} cannot be decoded ({_sniff_kind(path)}; {detail}); readable: {READABLE}, "
                             f"any rate and channel count; {_CONVERT_HINT}") from None
    if info.frames <= 0:
        raise AudioFileError(f"{path} contains no audio samples; record or export the audio again")
    try:
        check_audio_format(info.samplerate, info.channels)
    except AudioFileError as error:
        raise AudioFileError(f"{path}: its header says {info.channels} channels at {info.samplerate} Hz: {error}; "
                             f"the header is damaged, or {_CONVERT_HINT}") from None
    note = ""
    cut = re.search(r"^data : (\d+) \(should be (\d+)\)", info.extra_info, re.MULTILINE)
    if cut:
        note = (f"truncated: its header promises {int(cut[1])} bytes of audio but the file holds {int(cut[2])}; "
                f"playing the {info.frames / info.samplerate:.2f} s present")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                     f"{info.format} {info.subtype}", note)


def _sniff_kind(path: Path) -> str:
    """A name for what a file that libsndfile refused looks like, from its first bytes."""
    with path.open("rb") as file:
        head = file.read(16)
    if head[4:8] == b"ftyp":
        return "it looks like MP4/M4A/AAC audio, which libsndfile does not read"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "it looks like MP3 audio, but its frames do not decode"
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        return "a WAV file whose header or data is damaged"
    for magic, name in ((b"fLaC", "FLAC"), (b"OggS", "Ogg")):
        if head.startswith(magic):
            return f"it looks like {name} audio, but it does not decode"
    return f"it starts with bytes {head[:8].hex(' ')}, which no audio format here starts with"


class AudioDecoder:
    """Consecutive blocks of an audio file as float32 (frames, channels) in [-1, 1]."""

    def __init__(self, info: AudioInfo):
        self.info = info
        self._file = soundfile.SoundFile(str(info.path))
        self.position = 0  # frames decoded so far

    def read(self, max_frames: int) -> np.ndarray:
        block = self._file.read(min(max_frames, self.info.frames - self.position), dtype="float32", always_2d=True)
        self.position += len(block)
        if len(block) == 0:  # the file holds fewer frames than its header said
            self.position = self.info.frames
        return block

    def rewind(self) -> None:
        self._file.seek(0)
        self.position = 0

    def close(self) -> None:
        self._file.close()


def load_audio_16k_mono(path: str | Path) -> np.ndarray:
    """The whole file as 16 kHz mono float32 (offline conversion, training data, tests, ASR)."""
    info = read_audio_info(path)
    decoder = AudioDecoder(info)
    block_frames = 1 << 16
    resampler = StreamingResampler(info.sample_rate, info.channels, block_frames)
    pieces = []
    try:
        while decoder.position < info.frames:
            pieces.append(resampler.process(decoder.read(block_frames)).copy())
    finally:
        decoder.close()
    # The end of a whole file: flush the filter's look-ahead with silence, keep what the audio spans.
    pieces.append(resampler.process(np.zeros((resampler.taps.shape[1] + 1, info.channels), np.float32)).copy())
    return np.concatenate(pieces)[: -(-decoder.position * TARGET_RATE // info.sample_rate)]


@dataclass(frozen=True)
class FileSourceOptions:
    path: Path
    block_s: float = 0.01  # one block this often, as a microphone would deliver it
    loop: bool = False  # start over at the end (soak runs)


class FileSource:
    """Plays an audio file into a SampleRing from its own thread; `finished` is set at the end."""

    def __init__(self, options: FileSourceOptions, ring: SampleRing):
        self.options = options
        self.ring = ring
        self.info = read_audio_info(options.path)  # refuse bad files before anything starts
        self._block_frames = max(1, round(options.block_s * self.info.sample_rate))
        self.state = SourceState.STARTING
        self.message = self.info.note
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_live(self) -> bool:
        return self.state == SourceState.LIVE

    @property
    def name(self) -> str:
        return str(self.options.path)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hop-file-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.state in (SourceState.STARTING, SourceState.LIVE):
            self.state = SourceState.STOPPED

    def _run(self) -> None:
        info = self.info
        resampler = StreamingResampler(info.sample_rate, info.channels, self._block_frames)
        decoder = AudioDecoder(info)
        self.state = SourceState.LIVE
        started = time.perf_counter()
        frames_sent = 0
        try:
            while not self._stop.is_set():
                if decoder.position >= info.frames:
                    if not self.options.loop:
                        break
                    decoder.rewind()
                block = decoder.read(self._block_frames)
                frames_sent += len(block)
                # The block is "captured" when its last frame would have been heard.
                due = started + frames_sent / info.sample_rate
                self._stop.wait(max(0.0, due - time.perf_counter()))
                samples = resampler.process(block)
                self.ring.write(samples, time.perf_counter() - resampler.lag_seconds)
        except Exception as error:  # a file changed under us, a disk error: stop with a message
            self.state = SourceState.FAILED
            self.message = f"reading {info.path} failed: {error!r}"
        else:
            if not self._stop.is_set():
                self.state = SourceState.FINISHED
        finally:
            decoder.close()
            self.finished.set()
