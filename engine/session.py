"""One run of the engine, from one options object to a report: what `hop-live` does.

``build_session(options)`` is the only place that wires a run together: it loads
the model and its backend, builds the per-chunk pipeline (hop.engine.pipeline),
opens the outputs and control inputs, and either a live source with the real-time
driver (hop.engine.runtime) or, with ``fast``, a whole file for offline
conversion. ``Session.run(stop)`` runs it until the source ends, ``stop`` is set
or the duration is over, closes everything (a BVH is finished even after Ctrl-C)
and returns a report. hop-live, hop-bench and hop-soak all build their runs here.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hop.engine.backends import BackendError, BackendOptions, prepare
from hop.engine.outputs import Outputs
from hop.engine.pipeline import FramePipeline, offline_pose_frames
from hop.engine.ring import RingOptions, SampleRing
from hop.engine.runtime import Engine
from hop.engine.status import EngineStatus
from hop.model import CheckpointError, Hop, HopConfig, HopStream, LMNotFoundError, load_checkpoint
from hop.profiles import EngineSettings, MotionOptions

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_SPEECH = ASSETS / "demo_speech.wav"
# The checkpoint hop-live uses when none is given (see README: what it was trained on).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "model" / "weights" / "default.pt"


class SessionError(RuntimeError):
    """Something the user can fix; the message says how."""


@dataclass(frozen=True)
class OutputSpec:
    kind: str  # osc | vmc | ws | bvh
    host: str = "127.0.0.1"
    port: int = 0
    path: Path | None = None


@dataclass(frozen=True)
class SessionOptions:
    mic: str | None = None
    input: Path | None = None
    fast: bool = False  # with input: offline conversion, every frame, as fast as the CPU goes
    loop: bool = False
    samplerate: float | None = None
    outputs: tuple[OutputSpec, ...] = ()
    checkpoint: Path | None = None
    engine: EngineSettings = field(default_factory=EngineSettings)
    motion: MotionOptions = field(default_factory=MotionOptions)
    vmc_rig: str = "unity_humanoid"
    vmc_avatar: Path | None = None  # --avatar: the VMC receiver's avatar (.vrm/.glb); positions become its own
    ws_allow_remote: bool = False
    ws_token: str | None = None
    osc_control: tuple[str, int] | None = None  # (host, port) of the OSC control input; loopback only
    style: str = "neutral"
    stats_line: bool = False
    stats_json: Path | None = None
    duration_s: float | None = None
    report_dir: Path | None = None  # when set: BVH/GIF/latency plot of the run are written here

    def __post_init__(self):  # --checkpoint NAME (no such file): a built-in checkpoint by name
        name = str(self.checkpoint) if self.checkpoint is not None else ""
        if name in BUILTIN_CHECKPOINTS and not Path(name).exists():
            object.__setattr__(self, "checkpoint", DEFAULT_CHECKPOINT.parent / BUILTIN_CHECKPOINTS[name])


# Built-in checkpoints by name (model/weights/; the README says each one's data and licence).
# The default stays DEFAULT_CHECKPOINT whatever is listed here.
BUILTIN_CHECKPOINTS = {"synthetic": "default.pt", "expressive": "expressive.pt"}


def parse_host_port(spec: str, default_port: int | None) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = spec, ""
    if not port:
        if default_port is None:
            raise SessionError(f"{spec!r} needs a port, e.g. 127.0.0.1:9000")
        return host or "127.0.0.1", default_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SessionError(f"bad port in {spec!r}; expected HOST:PORT with PORT in 0..65535")
    return host or "127.0.0.1", int(port)


# -- model -------------------------------------------------------------------------------

def load_model(checkpoint: Path | None) -> tuple[Hop, str]:
    """The model and a one-line description of where it came from."""
    path = checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    try:
        if path is None:
            torch.manual_seed(0)
            model = Hop(HopConfig()).eval()
            return model, ("UNTRAINED model (no checkpoint given and no built-in default installed): "
                           "motion follows the audio's timing only by chance; pass --checkpoint")
        model, payload = load_checkpoint(path)
    except CheckpointError as error:
        raise SessionError(str(error)) from None
    except LMNotFoundError as error:
        raise SessionError(str(error)) from None
    except (RuntimeError, KeyError, ValueError, TypeError, EOFError) as error:
        # torch.load on a file that is not a checkpoint, or weights whose shapes do not fit
        # the config stored beside them: a message, not a traceback.
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SessionError(f"checkpoint {str(path)!r} cannot be loaded: it does not fit this hop-live's model "
                           f"({type(error).__name__}: {detail[:200]}); pass a checkpoint written by this "
                           "version's hop-train, or leave --checkpoint out to use the built-in one") from None
    if not model.cfg.causal:
        raise SessionError(f"checkpoint {str(path)!r} is an offline (paper-mode, bidirectional) model; "
                           "the live engine needs a causal one (train with mode = \"streaming\")")
    about = payload.get("description") or (payload.get("train_args") or {}).get("data", {}).get("train", "?")
    return model, f"checkpoint {path} (trained on {about})"


def apply_style(stream: HopStream, spec: str) -> None:
    spec = spec.strip()
    try:
        if spec in ("neutral", ""):
            stream.set_style(0)
        elif spec.startswith("sample"):
            seed = int(spec.split(":", 1)[1]) if ":" in spec else None
            stream.set_style(0, sample=True, seed=seed)
        elif spec.startswith("speaker:"):
            stream.set_style(0, speaker=int(spec.split(":", 1)[1]))
        else:
            stream.set_style(0, vector=np.array([float(x) for x in spec.split(",")], dtype=np.float32))
    except ValueError as error:
        raise SessionError(f"bad --style {spec!r}: {error}; use neutral, sample[:SEED], speaker:N or "
                           f"{stream.model.cfg.style_dim} comma-separated numbers") from None


def warm_up(model: Hop, step, device: str) -> None:
    """Run every first-call cost (prototype cache, allocator, JIT kernels) before real audio arrives."""
    from hop.engine.sanitize import AudioSanitizer
    AudioSanitizer().process(np.zeros(64, dtype=np.float32))
    HopStream(model, device=device, step=step).push_audio(np.zeros(model.cfg.mel.sample_rate // 2, np.float32))


# -- the session ---------------------------------------------------------------------------

class Session:
    """A run, built: the pipeline, its outputs and either a live driver or a file to convert."""

    def __init__(self, options: SessionOptions, model: Hop, model_note: str, pipeline: FramePipeline,
                 status: EngineStatus, audio: np.ndarray | None):
        self.options = options
        self.model = model
        self.model_note = model_note
        self.pipeline = pipeline
        self.status = status
        self.audio = audio  # offline conversion: the whole input at 16 kHz
        self.wire_rate = pipeline.pose_fps * pipeline.send_clock.per_frame
        self.outputs = Outputs([], status)  # the live driver feeds the same Outputs
        self.engine: Engine | None = None  # the live driver; None for offline conversion
        self.controls = None
        self.recorder: _FrameRecorder | None = None

    def apply_control(self, control) -> None:
        """A validated control message from the WebSocket or OSC input (runs on that input's thread)."""
        if self.engine is not None:
            apply_control(self.engine, control)

    def run(self, stop: threading.Event | None = None) -> dict:
        """Run to the end of the input, ``stop`` or the duration; close everything; the report."""
        stop = stop or threading.Event()
        watcher = threading.Thread(target=self._watch, args=(stop,), daemon=True)
        watcher.start()
        started = time.perf_counter()
        error = None
        try:
            if self.engine is not None:
                self.engine.run()
            else:
                self._convert(stop)
        except Exception as exc:  # a source that cannot open (CaptureError) and the like
            error = exc
        finally:
            stop.set()
            watcher.join(timeout=2)
            self.close()
        if error is not None:
            raise SessionError(str(error)) from error
        return self._report(time.perf_counter() - started)

    def close(self) -> None:
        if self.controls is not None:
            self.controls.close()
        self.outputs.close()
        if self.pipeline.asr is not None:
            self.pipeline.asr.stop()

    def _convert(self, stop: threading.Event) -> None:
        """Offline: every send of the file, in order, to every output; nothing real-time."""
        self.status.source_name = str(self.options.input)
        for frame in offline_pose_frames(self.pipeline, self.audio, self.model.cfg.skeleton):
            if stop.is_set():
                break
            self.outputs.send(frame)
            self.status.frames_emitted += 1
        self.status.sanitizer = self.pipeline.sanitizer.counts.as_dict()
        self.outputs.publish()

    def _watch(self, stop: threading.Event) -> None:
        """Stops the run on request or at the duration; prints and saves live status."""
        options = self.options
        deadline = time.perf_counter() + options.duration_s if options.duration_s else None
        last_json = 0.0
        while not stop.wait(0.5):
            if deadline is not None and time.perf_counter() >= deadline:
                break
            if options.stats_line:
                print("\r" + self.status.status_line()[:160].ljust(160), end="", file=sys.stderr, flush=True)
            if options.stats_json is not None and time.perf_counter() - last_json >= 1.0:
                _write_json(options.stats_json, self.status.snapshot())
                last_json = time.perf_counter()
        if options.stats_line:
            print(file=sys.stderr)
        stop.set()
        if self.engine is not None:
            self.engine.stop()

    def _report(self, seconds: float) -> dict:
        pipeline = self.pipeline
        summary = {
            "model": self.model_note,
            "source": self.status.source_name,
            "seconds": round(seconds, 2),
            "pose_frames_computed": pipeline.model_frames,
            "model_ms_per_frame": round(1000 * pipeline.model_seconds / max(pipeline.model_frames, 1), 3),
            **{k: v for k, v in self.status.snapshot().items() if k in (
                "frames_emitted", "frames_skipped", "frames_dropped", "accounting", "latency_ms", "ring_overruns",
                "input_overflows", "sanitizer", "asr", "recent_errors", "control_inputs")},
            "outputs": self.outputs.stats(),
        }
        if self.audio is not None:
            summary["audio_s"] = round(len(self.audio) / self.model.cfg.mel.sample_rate, 3)
            summary["wire_rate"] = self.wire_rate
        if self.options.stats_json is not None:
            _write_json(self.options.stats_json, summary)
        if self.recorder is not None and self.options.report_dir is not None:
            from hop.engine.report import write_run_report
            summary["files"] = write_run_report(self.options.report_dir, self.recorder.frames,
                                                list(self.recorder.latencies), self.model.cfg.skeleton)
        return {"summary": summary}


def build_session(options: SessionOptions, *, model: tuple[Hop, str] | None = None,
                  status: EngineStatus | None = None, extra_sinks: tuple = ()) -> Session:
    """Everything a run needs, from one options object. For tools and tests: ``model`` an already
    loaded (model, note), ``status`` one to fill, ``extra_sinks`` outputs beside the options' own."""
    settings = options.engine
    if options.fast and options.input is None:
        raise SessionError("--fast converts a file: give it --input FILE")
    audio = _load_input(options) if options.fast else None  # a bad file is refused before the model loads
    model, model_note = model or load_model(options.checkpoint)
    print(f"hop-live: {model_note}", file=sys.stderr)
    try:
        step = prepare(model, BackendOptions(settings.backend, settings.device, settings.threads or None,
                                             settings.lm_weights))
    except BackendError as error:
        raise SessionError(str(error)) from None
    warm_up(model, step, settings.device)
    stream = HopStream(model, device=settings.device, step=step)
    apply_style(stream, options.style)
    status = status or EngineStatus()
    motion = options.motion
    try:
        if options.fast:
            from hop.model import load_tokenizer
            tokenizer = load_tokenizer(model.cfg.lm) if settings.asr and model.lm is not None else None
            pipeline = FramePipeline(stream, motion, settings.send_rate, tokenizer=tokenizer)
            if tokenizer is not None:
                _pre_transcribe(audio, pipeline, status)
        else:
            asr, tokenizer = _start_asr(settings.asr, model, status)
            pipeline = FramePipeline(stream, motion, settings.send_rate, asr=asr, tokenizer=tokenizer)
    except ValueError as error:  # a send rate below the pose rate, a tokenizer without PAD
        raise SessionError(str(error)) from None
    if options.report_dir is not None:
        options.report_dir.mkdir(parents=True, exist_ok=True)
    wire_rate = pipeline.pose_fps * pipeline.send_clock.per_frame
    session = Session(options, model, model_note, pipeline, status, audio)
    sinks = session.outputs.sinks
    try:
        sinks.extend(open_sinks(options, model.cfg.skeleton, wire_rate, session.apply_control))
        sinks.extend(extra_sinks)
        if options.report_dir is not None:
            session.recorder = _FrameRecorder(wire_rate)
            sinks.append(session.recorder)
        if not options.fast:
            ring = SampleRing(RingOptions(seconds=10.0))
            session.engine = Engine(pipeline, ring, open_source(options, ring), session.outputs, settings, status)
            if session.recorder is not None:
                session.engine.latency_trace = session.recorder.latencies
        session.controls = _open_osc_control(options, status, session.apply_control)
    except (SessionError, ValueError) as error:
        session.close()
        raise SessionError(str(error)) from None
    return session


def run_session(options: SessionOptions, stop: threading.Event | None = None) -> dict:
    """Build and run one session: what hop-live does."""
    return build_session(options).run(stop)


# -- parts ---------------------------------------------------------------------------------

def apply_control(engine: Engine, control) -> None:
    """Hand a validated control (hop.bridges.control) to the live driver, which applies it between steps."""
    if control.intensity is not None:
        engine.set_intensity(control.intensity)
    if control.mute is not None:
        engine.set_muted(control.mute)
    if control.style is not None:
        style = control.style
        engine.set_style(lambda stream: apply_style(stream, style.replace("_", ":", 1)))


def open_sinks(options: SessionOptions, skeleton: str, wire_rate: float, on_control) -> list:
    sinks = []
    try:
        for out in options.outputs:
            if out.kind == "osc":
                from hop.bridges.osc import OscSink
                sinks.append(OscSink(out.host, out.port))
            elif out.kind == "vmc":
                from hop.bridges.vmc import VmcOptions, VmcSink
                sinks.append(VmcSink(out.host, out.port, VmcOptions(rig=options.vmc_rig, avatar=options.vmc_avatar,
                                                                    send_rate=wire_rate)))
            elif out.kind == "ws":
                from hop.bridges.ws import WebSocketOptions, WebSocketSink
                sink = WebSocketSink(WebSocketOptions(host=out.host, port=out.port, skeleton=skeleton,
                                                      allow_remote=options.ws_allow_remote,
                                                      token=options.ws_token))
                sink.on_control(on_control)
                sinks.append(sink)
                print(f"hop-live: viewer at {sink.viewer_url}", file=sys.stderr)
            elif out.kind == "bvh":
                from hop.bridges.bvh import BvhOptions, BvhRecorder
                sinks.append(BvhRecorder(out.path, BvhOptions(fps=wire_rate, skeleton=skeleton,
                                                              wait_when_behind=options.fast)))
            else:
                raise SessionError(f"unknown output kind {out.kind!r}")
    except (OSError, ValueError) as error:
        for sink in sinks:
            sink.close()
        raise SessionError(f"cannot open output: {error}") from None
    return sinks


def _open_osc_control(options: SessionOptions, status: EngineStatus, on_control):
    if options.osc_control is None:
        return None
    from hop.bridges.osc_control import OscControlOptions, OscControlServer
    host, port = options.osc_control
    try:
        server = OscControlServer(OscControlOptions(host=host, port=port), on_control)
    except (OSError, ValueError) as error:
        raise SessionError(f"cannot open OSC control input: {error}") from None
    status.control_inputs["osc"] = server.stats
    print(f"hop-live: OSC control on {host}:{server.port} (/hop/control/intensity|mute|style)", file=sys.stderr)
    return server


def _load_input(options: SessionOptions) -> np.ndarray:
    from hop.engine.audio_file import AudioFileError, load_wav_16k_mono
    try:
        return load_wav_16k_mono(Path(options.input))
    except (AudioFileError, OSError) as error:
        raise SessionError(str(error)) from None


def open_source(options: SessionOptions, ring: SampleRing):
    if options.input is not None:
        from hop.engine.audio_file import AudioFileError, FileSource, FileSourceOptions
        try:
            return FileSource(FileSourceOptions(Path(options.input), loop=options.loop), ring)
        except (AudioFileError, OSError) as error:
            raise SessionError(str(error)) from None
    from hop.engine.capture import CaptureOptions, MicCapture
    device = options.mic
    if device in (None, "default"):
        device = None
    elif isinstance(device, str) and device.isdigit():
        device = int(device)
    return MicCapture(CaptureOptions(device=device, samplerate=options.samplerate), ring)


def _start_asr(enabled: bool, model: Hop, status: EngineStatus):
    if not enabled:
        return None, None
    if model.lm is None:
        status.asr_message = "this checkpoint has no LM: text would be unused; ASR not started"
        return None, None
    from hop.engine.asr import AsrClient, AsrOptions
    from hop.model import load_tokenizer
    asr = AsrClient(AsrOptions())
    asr.start()
    return asr, load_tokenizer(model.cfg.lm)


def _pre_transcribe(audio: np.ndarray, pipeline: FramePipeline, status: EngineStatus) -> None:
    """Offline: the whole file's words are known before the first frame."""
    from hop.engine.asr import AsrUnavailable, transcribe_file
    try:
        words = transcribe_file(audio)
    except AsrUnavailable as error:
        status.asr_message = f"{error}; converting without text"
        print(f"hop-live: {status.asr_message}", file=sys.stderr)
        return
    pipeline.add_words([(w.word, w.start_s, w.end_s) for w in words])
    status.asr_words = len(words)
    status.asr_message = f"{len(words)} words transcribed before conversion"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class _FrameRecorder:
    """A sink that keeps what the demo report needs, bounded for live sessions of any length:
    the frames of the first GIF_SECONDS (the GIF shows those) and the newest latencies. Frames
    are timed by their index at the wire rate, so --fast runs animate at the speed of speech."""

    GIF_SECONDS = 30.0
    LATENCIES = 60 * 60 * 60  # an hour at 60 sends a second

    def __init__(self, wire_rate: float):
        self.wire_rate = wire_rate
        self.frames: list[tuple[float, np.ndarray, bool]] = []  # (media time s, dir_vec, speaking)
        self.latencies: deque[tuple[float, float]] = deque(maxlen=self.LATENCIES)  # engine appends (sent at, s)

    def send(self, frame) -> None:
        media_time = frame.index / self.wire_rate
        if media_time <= self.GIF_SECONDS:
            self.frames.append((media_time, frame.dir_vec, frame.speaking))

    def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {"kept": len(self.frames), "dropped": 0, "errors": 0, "last_error": ""}
