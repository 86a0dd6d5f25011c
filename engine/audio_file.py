"""WAV input: `--input FILE`, played at real-time pace or converted as fast as possible.

A small RIFF reader (the stdlib `wave` of Python 3.11 reads neither float nor
WAVE_FORMAT_EXTENSIBLE files) decodes 8/16/24/32-bit integer and 32/64-bit float
PCM, any channel count and rate, block by block from a memory map, through the
same streaming resampler as the microphone into the sample ring. Files that are
not usable WAV audio are refused with a message saying what they are and how to
convert them.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hop.engine.resample import StreamingResampler
from hop.engine.ring import SampleRing
from hop.engine.status import SourceState

_FORMAT_PCM = 1
_FORMAT_FLOAT = 3
_FORMAT_EXTENSIBLE = 0xFFFE

_CONVERT_HINT = "convert it with: sox INPUT -r 16000 -c 1 -b 16 OUTPUT.wav (or ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav)"


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
class WavInfo:
    path: Path
    sample_rate: int
    channels: int
    bits_per_sample: int
    is_float: bool
    frames: int
    data_offset: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def read_wav_info(path: str | Path) -> WavInfo:
    """Parse the RIFF header; raises AudioFileError for anything unusable."""
    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"{path} is a directory, not an audio file")
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if not path.is_file():
        raise AudioFileError(f"{path} is not a regular file (a device or a pipe?); give a WAV file")
    size = path.stat().st_size
    if size == 0:
        raise AudioFileError(f"{path} is empty (0 bytes); record or export the audio again")
    with path.open("rb") as file:
        head = file.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            kind = _sniff_kind(head + file.read(4))
            raise AudioFileError(f"{path} is not a WAV file ({kind}); {_CONVERT_HINT}")
        if head[:4] == b"RIFX":
            raise AudioFileError(f"{path} is a big-endian RIFX file; {_CONVERT_HINT}")
        fmt = None
        while True:
            chunk_head = file.read(8)
            if len(chunk_head) < 8:
                what = "audio data" if fmt else "its format chunk"
                raise AudioFileError(
                    f"{path} is truncated: it ends before {what}; "
                    "re-export it, or if it has audio try: sox --ignore-length INPUT fixed.wav"
                )
            chunk_id, chunk_size = struct.unpack("<4sI", chunk_head)
            if chunk_id == b"fmt ":
                fmt = _parse_fmt(path, file.read(chunk_size))
                file.seek(chunk_size % 2, 1)
            elif chunk_id == b"data":
                if fmt is None:
                    raise AudioFileError(f"{path}: data chunk before the format chunk; {_CONVERT_HINT}")
                data_offset = file.tell()
                break
            else:
                file.seek(chunk_size + chunk_size % 2, 1)
    sample_rate, channels, bits, is_float = fmt
    frame_bytes = channels * bits // 8
    present = size - data_offset
    # 0xFFFFFFFF (and 0) is what streaming recorders write when they never patched the header.
    if chunk_size in (0, 0xFFFFFFFF) and present > 0:
        chunk_size = present - present % frame_bytes
    if chunk_size > present:
        raise AudioFileError(
            f"{path} is truncated: its header promises {chunk_size} bytes of audio but only "
            f"{present} are present (the recording was cut off); "
            "rewrite the header with: sox --ignore-length INPUT fixed.wav"
        )
    frames = chunk_size // frame_bytes
    if frames == 0:
        raise AudioFileError(f"{path} contains no audio samples; record or export the audio again")
    return WavInfo(path, sample_rate, channels, bits, is_float, frames, data_offset)


def _sniff_kind(head: bytes) -> str:
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "it looks like MP3 audio"
    if head.startswith(b"fLaC"):
        return "it looks like FLAC audio"
    if head.startswith(b"OggS"):
        return "it looks like Ogg audio"
    if head[4:8] == b"ftyp":
        return "it looks like MP4/M4A audio"
    return f"it starts with bytes {head[:8].hex(' ')}, not 'RIFF....WAVE'"


def _parse_fmt(path: Path, body: bytes) -> tuple[int, int, int, bool]:
    if len(body) < 16:
        raise AudioFileError(f"{path} is truncated inside its format chunk; {_CONVERT_HINT}")
    tag, channels, sample_rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _FORMAT_EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
    supported = {(_FORMAT_PCM, 8), (_FORMAT_PCM, 16), (_FORMAT_PCM, 24), (_FORMAT_PCM, 32),
                 (_FORMAT_FLOAT, 32), (_FORMAT_FLOAT, 64)}
    if (tag, bits) not in supported:
        raise AudioFileError(
            f"{path}: WAV encoding {tag} with {bits} bits per sample is not supported "
            f"(use 8/16/24/32-bit integer or 32/64-bit float PCM); {_CONVERT_HINT}"
        )
    try:
        check_audio_format(sample_rate, channels)
    except AudioFileError as error:
        raise AudioFileError(f"{path}: its header says {channels} channels at {sample_rate} Hz: {error}; "
                             f"the header is damaged, or {_CONVERT_HINT}") from None
    return sample_rate, channels, bits, tag == _FORMAT_FLOAT


class WavDecoder:
    """Decodes consecutive blocks of a WAV file to float32 (frames, channels) in [-1, 1]."""

    def __init__(self, info: WavInfo):
        self.info = info
        self._raw = np.memmap(info.path, dtype=np.uint8, mode="r", offset=info.data_offset,
                              shape=(info.frames * info.channels * info.bits_per_sample // 8,))
        self.position = 0  # frames decoded so far

    def read(self, max_frames: int) -> np.ndarray:
        info = self.info
        count = min(max_frames, info.frames - self.position)
        width = info.bits_per_sample // 8
        start = self.position * info.channels * width
        raw = np.asarray(self._raw[start : start + count * info.channels * width])
        self.position += count
        if info.is_float:
            samples = raw.view("<f4" if width == 4 else "<f8").astype(np.float32)
        elif width == 1:
            samples = (raw.astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is unsigned
        elif width == 3:
            triples = raw.reshape(-1, 3).astype(np.int32)
            values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
            values = np.where(values >= 1 << 23, values - (1 << 24), values)
            samples = values.astype(np.float32) / float(1 << 23)
        else:
            samples = raw.view("<i2" if width == 2 else "<i4").astype(np.float32) / float(1 << (8 * width - 1))
        return samples.reshape(count, info.channels)

    def close(self) -> None:
        self._raw._mmap.close()


def load_wav_16k_mono(path: str | Path) -> np.ndarray:
    """The whole file as 16 kHz mono float32 (offline conversion, tests, ASR)."""
    info = read_wav_info(path)
    decoder = WavDecoder(info)
    block_frames = 1 << 16
    resampler = StreamingResampler(info.sample_rate, info.channels, block_frames)
    pieces = []
    try:
        while decoder.position < info.frames:
            pieces.append(resampler.process(decoder.read(block_frames)).copy())
    finally:
        decoder.close()
    return np.concatenate(pieces)


@dataclass(frozen=True)
class FileSourceOptions:
    path: Path
    block_s: float = 0.01  # one block this often, as a microphone would deliver it
    loop: bool = False  # start over at the end (soak runs)


class FileSource:
    """Plays a WAV file into a SampleRing from its own thread; `finished` is set at the end."""

    def __init__(self, options: FileSourceOptions, ring: SampleRing):
        self.options = options
        self.ring = ring
        self.info = read_wav_info(options.path)  # refuse bad files before anything starts
        self._block_frames = max(1, round(options.block_s * self.info.sample_rate))
        self.state = SourceState.STARTING
        self.message = ""
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
        decoder = WavDecoder(info)
        self.state = SourceState.LIVE
        started = time.perf_counter()
        frames_sent = 0
        try:
            while not self._stop.is_set():
                if decoder.position >= info.frames:
                    if not self.options.loop:
                        break
                    decoder.position = 0
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
