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

import ipaddress
import json
import math
import os
import re
import shutil
import socket
import sys
import threading
import time
import zipfile
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
from hop.model import (CheckpointError, Hop, HopConfig, HopStream, LMNotFoundError,
                       load_checkpoint, resolve_checkpoint)
from hop.profiles import RANGES, EngineSettings, MotionOptions

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_SPEECH = ASSETS / "demo_speech.wav"
# The checkpoint hop-live uses when none is given (see README: what it was trained on).
DEFAULT_CHECKPOINT = resolve_checkpoint(None)


class SessionError(RuntimeError):
    """Something the user can fix; the message says how."""


class UsageError(SessionError):
    """A flag's value or an input file that cannot be used (hop-live exits 2): the message names
    the flag, the value and what is accepted."""


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
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", resolve_checkpoint(self.checkpoint))


# -- addresses ---------------------------------------------------------------------------
# Port ranges come from hop.profiles.RANGES: a destination (--osc, --vmc) is 1..65535; a port
# this process listens on (--ws, --osc-control) may also be 0, meaning any free port.
DESTINATION_PORTS = "outputs.osc_port"
LISTEN_PORTS = "outputs.ws_port"
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")


def port_rule(ports: str = DESTINATION_PORTS) -> str:
    """How a port is described in every message: "PORT in 1..65535" or "PORT in 0..65535 (0: any free port)"."""
    low, high = RANGES[ports]
    return f"PORT in {low}..{high}" + (f" ({low}: any free port)" if low == 0 else "")


def parse_host_port(spec: str, default_port: int | None, *, flag: str = "address",
                    ports: str = DESTINATION_PORTS, port_only: bool = False) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (with ``default_port``) or, with ``port_only``,
    ``PORT`` alone for 127.0.0.1 -> (host, port); UsageError naming ``flag`` otherwise."""
    low, high = RANGES[ports]
    form = ("[HOST:]PORT" if port_only else "HOST:PORT" if default_port is None else "HOST[:PORT]")
    example = {"[HOST:]PORT": "8765 or 127.0.0.1:8765", "HOST:PORT": "127.0.0.1:9000",
               "HOST[:PORT]": "127.0.0.1 or 127.0.0.1:39539"}[form]

    def bad(reason: str) -> UsageError:
        return UsageError(f"{flag} {spec!r}: {reason}; expected {form} with {port_rule(ports)}, e.g. {example}")

    spec_text = spec.strip()
    if not spec_text:
        raise bad("empty")
    if port_only and spec_text.isdigit():
        host, port = "127.0.0.1", spec_text
    elif spec_text.startswith("["):  # [IPv6] or [IPv6]:PORT
        inside, close, rest = spec_text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise bad("an IPv6 address goes in brackets: [::1]:PORT")
        host, port = inside, rest[1:]
    elif spec_text.count(":") > 1:
        raise bad("write an IPv6 address in brackets, e.g. [::1]:9000")
    else:
        host, sep, port = spec_text.rpartition(":")
        if not sep:
            host, port = spec_text, ""
        if port_only and not sep:
            raise bad("not a port number")
    host = host or "127.0.0.1"
    if not _valid_host(host):
        raise bad(f"{host!r} is not a host name or an IP address")
    if not port:
        if default_port is None:
            raise bad("no port")
        return host, default_port
    if not port.isdigit() or len(port) > 5 or not low <= int(port) <= high:
        raise bad(f"{port!r} is not a port")
    return host, int(port)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and bool(_HOST_NAME.fullmatch(host)) and not host.replace(".", "").isdigit()


# -- model -------------------------------------------------------------------------------

_CHECKPOINT_HINT = "pass a checkpoint written by hop-train, or leave --checkpoint out to use the built-in one"


def check_checkpoint_file(path: Path) -> dict:
    """The payload of a checkpoint file, read as data only; UsageError naming --checkpoint for a
    path that is not one (missing, a folder, a WAV, random bytes, a truncated copy...).
    Nothing in the file is ever run: hop-live reads tensors and plain data only."""
    from hop.model.checkpoint import read_checkpoint

    shown = str(path)
    if not shown or shown == ".":
        raise UsageError(f"--checkpoint {shown!r}: an empty path; {_CHECKPOINT_HINT}")
    if path.is_dir():
        raise UsageError(f"--checkpoint {shown!r} is a directory, not a checkpoint file; {_CHECKPOINT_HINT}")
    if not path.exists():
        raise UsageError(f"--checkpoint {shown!r} does not exist; {_CHECKPOINT_HINT}")
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError as error:
        raise UsageError(f"--checkpoint {shown!r} cannot be read ({error.strerror}); {_CHECKPOINT_HINT}") from None
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK\x03\x04"):
            raise UsageError(f"--checkpoint {shown!r} is corrupt or truncated (an archive without its end); "
                             "copy it again or retrain it")
        what = "it is empty" if not head else f"it starts with bytes {head.hex(' ')}"
        raise UsageError(f"--checkpoint {shown!r} is not a hop-live checkpoint (a checkpoint is the PyTorch "
                         f"archive hop-train writes; {what}); {_CHECKPOINT_HINT}")
    try:
        return read_checkpoint(path)
    except Exception as error:  # torch's reader raises many types on a damaged archive
        raise UsageError(f"--checkpoint: {_checkpoint_problem(path, error)}") from None


def _checkpoint_problem(path: Path, error: BaseException) -> str:
    """One line about a checkpoint that failed to load, without torch's advice to unpickle
    arbitrary objects (weights_only=False runs code from the file: never for an untrusted one)."""
    text = " ".join(str(error).split())
    if "weights_only" in text or "Unpickl" in text or "pickle" in text.lower():
        return (f"{str(path)!r} holds objects other than tensors and plain data, so it is not a hop-live "
                f"checkpoint (hop-live never runs code from a checkpoint); {_CHECKPOINT_HINT}")
    if isinstance(error, CheckpointError):
        return text[:400]
    return (f"checkpoint {str(path)!r} cannot be loaded ({type(error).__name__}: {text[:200]}); "
            f"{_CHECKPOINT_HINT}")


def load_model(checkpoint: Path | None) -> tuple[Hop, str]:
    """The model and a one-line description of where it came from. A checkpoint that cannot be
    used raises UsageError (it is the --checkpoint value that is wrong)."""
    path = checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    try:
        if path is None:
            torch.manual_seed(0)
            model = Hop(HopConfig()).eval()
            return model, ("UNTRAINED model (no checkpoint given and no built-in default installed): "
                           "motion follows the audio's timing only by chance; pass --checkpoint")
        check_checkpoint_file(path)
        model, payload = load_checkpoint(path)
    except UsageError:
        raise
    except (CheckpointError, LMNotFoundError) as error:
        raise UsageError(f"--checkpoint: {_checkpoint_problem(path, error)}") from None
    except Exception as error:
        # weights whose shapes do not fit the config stored beside them, and the like:
        # a message, not a traceback.
        detail = " ".join(str(error).split())
        raise UsageError(f"--checkpoint {str(path)!r} cannot be loaded: it does not fit this hop-live's model "
                         f"({type(error).__name__}: {detail[:200]}); pass a checkpoint written by this "
                         "version's hop-train, or leave --checkpoint out to use the built-in one") from None
    if not model.cfg.causal:
        raise UsageError(f"--checkpoint {str(path)!r} is an offline (paper-mode, bidirectional) model; "
                         "the live engine needs a causal one (train with mode = \"streaming\")")
    about = payload.get("description") or (payload.get("train_args") or {}).get("data", {}).get("train", "?")
    return model, f"checkpoint {path} (trained on {about})"


# -- style: the one grammar for --style and the style controls -----------------------------

STYLE_GRAMMAR = "neutral, sample[:SEED], speaker:N or {dim} comma-separated finite numbers"
_SEED_DIGITS = 18  # a seed fits torch.Generator.manual_seed (below 2**63)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Style:
    """A parsed style: ``kind`` neutral | sample | speaker | vector."""
    kind: str
    seed: int | None = None
    speaker: int | None = None
    vector: tuple[float, ...] | None = None


def parse_style(spec: str, style_dim: int | None = None, n_speakers: int | None = None) -> Style:
    """``--style`` text -> Style, or ValueError saying why; with the model's ``style_dim`` and
    ``n_speakers`` also checks the vector's length and the speaker id against them."""
    text = spec.strip()
    if text == "neutral":
        return Style("neutral")
    if text == "sample" or text.startswith("sample:"):
        seed = text.partition(":")[2]
        if text != "sample" and not (seed.isdigit() and len(seed) <= _SEED_DIGITS):
            raise ValueError(f"the seed in {spec!r} must be a whole number 0..{10 ** _SEED_DIGITS - 1}")
        return Style("sample", seed=int(seed) if seed else None)
    if text.startswith("speaker:"):
        speaker = text.partition(":")[2]
        if not speaker.isdigit() or len(speaker) > 9:
            raise ValueError(f"the speaker in {spec!r} must be a whole number 0..{_last_speaker(n_speakers)}")
        if n_speakers is not None and not int(speaker) < n_speakers:
            raise ValueError(f"speaker id {int(speaker)} out of range 0..{n_speakers - 1} (this model's speakers)")
        return Style("speaker", speaker=int(speaker))
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{spec!r} is not a style") from None
    if not all(math.isfinite(v) and abs(v) <= _FLOAT32_MAX for v in values):
        raise ValueError(f"style vector {spec!r} has numbers that are not finite (NaN, inf or beyond float32)")
    if style_dim is not None and len(values) != style_dim:
        raise ValueError(f"style vector {spec!r} has {len(values)} numbers; this model takes {style_dim}")
    return Style("vector", vector=values)


def _last_speaker(n_speakers: int | None) -> str:
    return str(n_speakers - 1) if n_speakers else "N"


def style_from_control(name: str) -> str:
    """A style control's name (no ':' or ',' on the wire: ``speaker_3``, ``sample_7``) as ``--style`` text."""
    return name.replace("_", ":", 1)


def style_help(style_dim: int | str = "N") -> str:
    return STYLE_GRAMMAR.format(dim=style_dim)


def apply_style(stream: HopStream, spec: str | Style) -> None:
    """Set stream 0's style from ``--style`` text or a parsed Style (UsageError if the model cannot take it)."""
    cfg = stream.model.cfg
    try:
        style = spec if isinstance(spec, Style) else parse_style(spec, cfg.style_dim, cfg.n_speakers)
        if style.kind == "neutral":
            stream.set_style(0)
        elif style.kind == "sample":
            stream.set_style(0, sample=True, seed=style.seed)
        elif style.kind == "speaker":
            stream.set_style(0, speaker=style.speaker)
        else:
            stream.set_style(0, vector=np.array(style.vector, dtype=np.float32))
    except ValueError as error:
        raise UsageError(f"--style {str(spec)!r}: {error}; expected {style_help(cfg.style_dim)}") from None


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
        self._hurry = threading.Event()

    def apply_control(self, control) -> None:
        """A control message from the WebSocket or OSC input (runs on that input's thread), checked
        by the schema; raises ControlError, which the input sends back, for one this run cannot apply."""
        if self.engine is None:
            from hop.bridges.control import ControlError
            raise ControlError("not_live", "offline conversion (--fast) takes no controls")
        apply_control(self.engine, control)

    def hurry(self) -> None:
        """Stop now: skip what is left of the drain (a second Ctrl-C); outputs are still closed."""
        self._hurry.set()
        if self.engine is not None:
            self.engine.abort()

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
            self.pipeline.asr.stop(hurry=self._hurry)

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
            if options.stats_line:  # one terminal line (the outputs' faults come right after the state)
                width = max(40, shutil.get_terminal_size((161, 24)).columns - 1)
                print("\r" + self.status.status_line()[:width].ljust(width), end="", file=sys.stderr, flush=True)
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
        raise UsageError("--fast converts a file: give it --input FILE")
    validate(options, model_cfg=model[0].cfg if model is not None else None)  # before the model loads
    audio = _load_input(options) if options.fast else None
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
    """Check a control (hop.bridges.control, already through the schema) against what this engine
    can apply, then hand it to the live driver, which applies it between steps. One it cannot
    apply (a style the grammar or the model refuses) changes nothing: ControlError, which the
    input sends back to its sender with the reason, also recorded in the status."""
    style = None
    if control.style is not None:
        cfg = engine.pipeline.stream.model.cfg
        try:
            style = parse_style(style_from_control(control.style), cfg.style_dim, cfg.n_speakers)
            if style.kind == "vector":  # a name carries no commas: one number is no style vector
                raise ValueError(f"{control.style!r} is not a style")
        except ValueError as error:
            from hop.bridges.control import ControlError
            reason = (f"style {control.style!r}: {error}; send neutral, sample, sample_SEED or speaker_N "
                      f"(N in 0..{cfg.n_speakers - 1})")
            engine.status.record_error(f"control rejected: {reason}")
            raise ControlError("bad_value", reason) from None
    if control.intensity is not None:
        engine.set_intensity(control.intensity)
    if control.mute is not None:
        engine.set_muted(control.mute)
    if style is not None:
        engine.set_style(lambda stream: apply_style(stream, style))


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
                note = " (add ?token=... with your token; it is never printed)" if options.ws_token else ""
                print(f"hop-live: viewer at {sink.viewer_url.partition('?')[0]}{note}", file=sys.stderr)
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


# -- checking a run's values before anything loads --------------------------------------------

def validate(options: SessionOptions, *, model_cfg=None, devices: bool = False) -> None:
    """Every value and input file of a run, checked before anything heavy loads (the model takes
    seconds): UsageError naming the flag, the value and what is accepted, for the first that
    cannot be used. ``model_cfg``: the config of a model already loaded (else the checkpoint's
    is read, as data). ``devices``: also look the microphone up."""
    if options.input is not None:
        _check_input(Path(options.input))
    if options.duration_s is not None and not (math.isfinite(options.duration_s) and options.duration_s > 0):
        raise UsageError(f"--duration {options.duration_s!r}: expected a positive, finite number of seconds")
    if options.samplerate is not None:
        _check_samplerate(options.samplerate)
    _check_engine(options.engine)
    style_dim, n_speakers = _model_facts(options.checkpoint, model_cfg)
    try:
        parse_style(options.style, style_dim, n_speakers)
    except ValueError as error:
        raise UsageError(f"--style {options.style!r}: {error}; expected {style_help(style_dim)}") from None
    for out in options.outputs:
        _check_output(out, options)
    if options.osc_control is not None:
        host, port = options.osc_control
        where = f"--osc-control {_address(host, port)}"
        _check_port(where, port, LISTEN_PORTS)
        from hop.bridges.control import is_loopback
        if not is_loopback(host):
            raise UsageError(f"{where}: OSC control has no authentication and listens on loopback only "
                             "(127.0.0.1, ::1, localhost); forward it with ssh -L or socat from the machine that sends")
        _check_listen(where, host, port, socket.SOCK_DGRAM)
    if options.stats_json is not None:
        _check_output_file("--stats-json", Path(options.stats_json), make_folders=True)
    if options.report_dir is not None:
        _check_output_folder("--out", Path(options.report_dir))
    if devices and options.mic is not None and options.input is None:
        from hop.engine.capture import CaptureError, resolve_device
        mic = options.mic
        try:
            resolve_device(None if mic == "default" else int(mic) if mic.isdigit() else mic)
        except CaptureError as error:
            raise UsageError(f"--mic {mic!r}: {error}") from None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_input(path: Path) -> None:
    from hop.engine.audio_file import AudioFileError, read_audio_info
    if str(path) in ("", "."):
        raise UsageError(f"--input {str(path)!r}: an empty path; expected an audio file (WAV, FLAC, OGG, Opus or MP3)")
    try:
        read_audio_info(path)
    except AudioFileError as error:
        raise UsageError(f"--input: {error}") from None
    except OSError as error:
        raise UsageError(f"--input {str(path)!r} cannot be read ({error.strerror or error}); expected an audio file "
                         "this user may read") from None


def _check_samplerate(rate: float) -> None:
    from hop.engine.audio_file import AudioFileError, check_audio_format
    try:
        check_audio_format(rate)
    except AudioFileError as error:
        raise UsageError(f"--samplerate {rate!r}: {error}") from None


def _check_engine(settings: EngineSettings) -> None:
    """The device, backend and LM weights together (each alone is checked by EngineSettings)."""
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device 'cuda': this PyTorch sees no CUDA GPU "
                         f"(torch {torch.__version__}, CUDA {torch.version.cuda}); expected --device cpu here")
    if settings.lm_weights == "int8" and (settings.backend != "eager" or settings.device != "cpu"):
        raise UsageError(f"--lm-weights 'int8' with --backend {settings.backend!r} --device {settings.device!r}: "
                         "int8 runs with --backend eager on the CPU only; expected --lm-weights fp32 or bf16 here")
    if settings.backend == "tensorrt":
        import importlib.util
        if settings.device != "cuda":
            raise UsageError("--backend 'tensorrt' runs on NVIDIA GPUs only: expected --device cuda with it "
                             "(or --backend eager / compile on the CPU)")
        if importlib.util.find_spec("torch_tensorrt") is None:
            raise UsageError("--backend 'tensorrt': torch-tensorrt is not installed (pip install -e '.[gpu]'); "
                             "expected --backend eager or compile here")


def _model_facts(checkpoint: Path | None, model_cfg) -> tuple[int, int]:
    """(style_dim, n_speakers) of the model the run will load, read without loading it."""
    if model_cfg is not None:
        return model_cfg.style_dim, model_cfg.n_speakers
    path = checkpoint if checkpoint is not None else (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    if path is None:
        cfg = HopConfig()
        return cfg.style_dim, cfg.n_speakers
    config = check_checkpoint_file(Path(path)).get("config")
    if not isinstance(config, dict):
        raise UsageError(f"--checkpoint {str(path)!r} has no model config; {_CHECKPOINT_HINT}")
    if config.get("causal") is False:
        raise UsageError(f"--checkpoint {str(path)!r} is an offline (paper-mode, bidirectional) model; "
                         "the live engine needs a causal one (train with mode = \"streaming\")")
    defaults = HopConfig()
    style_dim, n_speakers = config.get("style_dim", defaults.style_dim), config.get("n_speakers", defaults.n_speakers)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (style_dim, n_speakers)):
        raise UsageError(f"--checkpoint {str(path)!r} has a damaged config (style_dim {style_dim!r}, "
                         f"n_speakers {n_speakers!r}); {_CHECKPOINT_HINT}")
    return style_dim, n_speakers


def _check_port(where: str, port, ports: str) -> None:
    low, high = RANGES[ports]
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= high:
        raise UsageError(f"{where}: {port!r} is not a port; expected {port_rule(ports)}")


def _check_output(out: OutputSpec, options: SessionOptions) -> None:
    if out.kind == "bvh":
        if out.path is None:
            raise UsageError("--bvh: no file given; expected a .bvh file path")
        # the --demo recording goes into --out, which the run makes
        in_report_dir = options.report_dir is not None and Path(out.path).parent == Path(options.report_dir)
        _check_output_file("--bvh", Path(out.path), make_folders=in_report_dir)
        return
    where = f"--{out.kind} {_address(out.host, out.port)}"
    if out.kind in ("osc", "vmc"):
        _check_port(where, out.port, DESTINATION_PORTS)
        try:
            socket.getaddrinfo(out.host, out.port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise UsageError(f"{where}: cannot resolve host {out.host!r} ({reason}); expected an IP address or a "
                             "host name this machine can resolve") from None
    elif out.kind == "ws":
        _check_port(where, out.port, LISTEN_PORTS)
        from hop.bridges import ws_auth
        try:
            ws_auth.check_exposure(out.host, options.ws_allow_remote, options.ws_token, ())
        except ValueError as error:
            raise UsageError(f"{where}: {error}") from None
        _check_listen(where, out.host, out.port, socket.SOCK_STREAM)
    else:
        raise UsageError(f"unknown output kind {out.kind!r}; expected osc, vmc, ws or bvh")


def _check_listen(where: str, host: str, port: int, kind: int) -> None:
    """That this process could listen on (host, port) now: a busy port is named before the model loads."""
    if port == 0:
        return
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            probe.bind(address)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UsageError(f"{where}: cannot listen there ({reason}); expected a free {port_rule(LISTEN_PORTS)} "
                         "on an address of this machine: pick another port, or stop the program using it") from None


def _check_output_file(flag: str, path: Path, make_folders: bool) -> None:
    """A file this run will write: not a folder, in a folder that exists (or, ``make_folders``,
    can be made) and may be written."""
    text = str(path)
    if text in ("", "."):
        raise UsageError(f"{flag} {text!r}: an empty path; expected a file path")
    if path.is_dir():
        raise UsageError(f"{flag} {text!r} is a directory; expected a file path")
    if path.exists() and (not path.is_file() or not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {text!r} exists and cannot be written as a file; expected a writable file path")
    folder = path.parent
    if not make_folders:
        if not folder.is_dir():
            raise UsageError(f"{flag} {text!r}: the folder {str(folder)!r} does not exist; expected a file path "
                             "in an existing folder")
    else:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise UsageError(f"{flag} {text!r}: {str(folder)!r} is a file, not a folder; expected a file path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {text!r}: the folder {str(folder)!r} is not writable; expected a file path "
                         "in a folder this user may write")


def _check_output_folder(flag: str, path: Path) -> None:
    text = str(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {text!r} is a file; expected a folder (made if missing)")
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {text!r}: {str(folder)!r} is not a writable folder; expected a folder "
                         "this user may create or write")


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
    from hop.engine.audio_file import AudioFileError, load_audio_16k_mono
    try:
        return load_audio_16k_mono(Path(options.input))
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
