"""hop-bench: the engine's benchmarks, each printing a short table and writing JSON.

    hop-bench latency   mic-to-wire latency through the real capture path: a virtual
                        microphone (PulseAudio pipe source, hop.tools.virtual_mic) fed
                        real speech at real-time pace -> MicCapture (PortAudio) -> Engine
                        (eager CPU) -> OscSink -> a UDP receiver in another process;
                        with and without ASR, torch threads 1 and 2
    hop-bench windowed  the streaming engine (one frame per step) beside the paper's
                        windowed offline mode (34-frame windows at 15 fps, 4 seed frames,
                        a new window every stride frames) on the same audio:
                        algorithmic latency and compute per second of audio
    hop-bench streams   concurrent independent streams at 30 fps: one batched HopStream
                        vs a loop over batch-1 HopStreams; the largest N whose p99 step
                        time stays within the headroom of the frame period
    hop-bench backends  per-frame step time of eager vs torch.compile (and TensorRT on
                        CUDA); compile time reported apart

Every JSON file carries the machine (CPU model, cores, torch version and threads,
load average before and after: the machine may be shared) and the date. The
default output is results/<subcommand>-<date>.json under the current directory.

Latency definition (the engine's own, see hop.engine.runtime): from the capture
time of a pose frame's newest audio sample (PortAudio's ADC time of the block,
mapped to perf_counter) to the moment the datagram carrying the frame has left
the sink's socket. The receiver process adds its own figure: the same capture
time to the datagram's arrival in another process.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hop.profiles import LM_WEIGHTS

SAMPLE_RATE = 16_000
SPEECH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech" / "ljspeech"
ESPEAK_TEXT = (
    "When the talk began, nobody expected the speaker to wave her hands quite so much. "
    "She pointed at the map, counted the options on her fingers, and then, with a shrug, "
    "admitted that the second plan was probably the better one after all."
)


# -- machine, statistics, output ---------------------------------------------------------

def machine_info() -> dict:
    import torch

    cpu_model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu_model == "unknown":
                cpu_model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model,
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"}),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": bool(torch.cuda.is_available()),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def percentiles_ms(values_s) -> dict:
    """Median, p95, p99, max (and mean, count) of durations given in seconds, in ms."""
    v = np.asarray(list(values_s), dtype=np.float64) * 1000.0
    if v.size == 0:
        return {"median": None, "p95": None, "p99": None, "max": None, "min": None, "mean": None, "count": 0}
    p50, p95, p99 = np.percentile(v, [50, 95, 99])
    return {"median": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(v.max()), 3), "min": round(float(v.min()), 3), "mean": round(float(v.mean()), 3),
            "count": int(v.size)}


def default_output(name: str) -> Path:
    return Path("results") / f"{name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def write_result(path: Path | None, name: str, result: dict) -> Path:
    path = Path(path) if path is not None else default_output(name)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return path


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# -- inputs ------------------------------------------------------------------------------

def load_speech(seconds: float, speech_dir: Path | None = None, gap_s: float = 0.25) -> tuple[np.ndarray, str]:
    """About ``seconds`` of real speech at 16 kHz: LJSpeech clips (with short pauses between
    them, as in talk) when present, else espeak-ng; repeated to length. Returns (audio, origin)."""
    from hop.engine.audio_file import load_audio_16k_mono

    speech_dir = Path(speech_dir) if speech_dir is not None else SPEECH_DIR
    clips = sorted(speech_dir.glob("*.wav")) if speech_dir.is_dir() else []
    pieces, total, origin = [], 0, f"LJSpeech clips from {speech_dir}"
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    for clip in clips:
        pieces += [load_audio_16k_mono(clip), gap]
        total += len(pieces[-2]) + len(gap)
        if total >= seconds * SAMPLE_RATE:
            break
    if not pieces:
        pieces, origin = [_espeak(ESPEAK_TEXT), gap], "espeak-ng (no LJSpeech clips found)"
    speech = np.concatenate(pieces)
    while len(speech) < seconds * SAMPLE_RATE:
        speech = np.concatenate([speech, speech])
    return speech[: int(seconds * SAMPLE_RATE)].astype(np.float32), origin


def _espeak(text: str) -> np.ndarray:
    from hop.engine.audio_file import load_audio_16k_mono

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        try:
            subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        except FileNotFoundError:
            raise SystemExit("hop-bench: no speech: LJSpeech clips are absent and espeak-ng is not installed "
                             "(run setup.sh, or pass --speech-dir)") from None
        return load_audio_16k_mono(wav)


def load_streaming_model(checkpoint: Path | None):
    """The model hop-live would use (default checkpoint, or a labelled untrained one)."""
    from hop.engine.session import SessionError, load_model

    try:
        return load_model(checkpoint)
    except SessionError as error:
        raise SystemExit(f"hop-bench: {error}") from None


def frame_chunks(audio: np.ndarray, mel) -> list[np.ndarray]:
    """Audio cut where the engine cuts it: chunk t holds the samples that complete frame t
    (``samples_for``, the count the runtime waits for; ``frame_end`` can be one sample short)."""
    n = mel.frames_in(audio.shape[-1])
    ends = [0] + [int(mel.samples_for(t + 1)) for t in range(n)]
    return [audio[..., ends[t]:ends[t + 1]] for t in range(n)]


# -- building blocks the pytest-benchmark tests time as well -----------------------------

class StreamingStepper:
    """One HopStream (any batch) advanced one pose frame per call on given audio."""

    def __init__(self, model, audio: np.ndarray, batch: int = 1, step=None):
        from hop.model import HopStream

        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = np.broadcast_to(audio, (batch, len(audio)))
        self.stream = HopStream(model, batch=batch, step=step)
        self.chunks = frame_chunks(audio, model.cfg.mel)
        self.next = 0

    def __call__(self) -> np.ndarray:
        chunk = self.chunks[self.next % len(self.chunks)]
        self.next += 1
        return self.stream.push_audio(chunk)


class LoopStepper:
    """N HopStreams of batch 1, each advanced one frame per call, one after another."""

    def __init__(self, model, audio: np.ndarray, n: int):
        self.steppers = [StreamingStepper(model, audio[i]) for i in range(n)]

    def __call__(self) -> list[np.ndarray]:
        return [s() for s in self.steppers]


def paper_model():
    """The paper's offline mode: bidirectional LM and GRU, 15 fps (untrained; timing only)."""
    import torch

    from hop.model import Hop, HopConfig

    torch.manual_seed(0)
    return Hop(HopConfig(causal=False, fps=15)).eval()


class WindowedRunner:
    """The paper's windowed inference: windows of ``window`` frames, the first ``seeds`` frames
    of each seeded with the previous window's poses, a new window every ``stride`` frames."""

    def __init__(self, model, audio: np.ndarray, window: int = 34, seeds: int = 4, stride: int | None = None):
        import torch

        from hop.model import log_mel

        self.model, self.window, self.seeds = model, window, seeds
        self.stride = stride or window - seeds
        if not 0 < self.stride <= window - seeds:
            raise ValueError(f"stride must be within 1..{window - seeds} (window {window}, {seeds} seeds)")
        cfg = model.cfg
        self.mel = torch.from_numpy(log_mel(np.asarray(audio, np.float32), cfg.mel))
        self.starts = list(range(0, len(self.mel) - window + 1, self.stride))
        if not self.starts:
            raise ValueError(f"audio too short for one {window}-frame window at {cfg.fps} fps")
        pad = model.lm.info.pad_token_id if model.lm is not None else 0
        self.tokens = torch.full((1, window), pad, dtype=torch.long)
        self.style = torch.zeros(1, cfg.style_dim)
        self.seed_pose = torch.zeros(1, seeds, cfg.pose_dim)  # the mean pose (outputs are relative to it)
        self.next = 0

    def __call__(self):
        import torch

        s = self.starts[self.next % len(self.starts)]
        self.next += 1
        cfg = self.model.cfg
        prev_pose = torch.zeros(1, self.window, cfg.pose_dim)
        prev_known = torch.zeros(1, self.window)
        prev_pose[:, :self.seeds] = self.seed_pose
        prev_known[:, :self.seeds] = 1.0
        with torch.inference_mode():
            poses = self.model.forward_offline(self.mel[s:s + self.window].unsqueeze(0), self.tokens, self.style,
                                               prev_pose, prev_known)
        # the next window starts `stride` frames later: its seeds are this window's frames there
        self.seed_pose = poses[:, self.stride:self.stride + self.seeds].clone()
        return poses


# -- latency ----------------------------------------------------------------------------

_RECEIVER = r"""
import json, socket, sys, threading, time
from pythonosc.osc_bundle import OscBundle
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.bind(("127.0.0.1", 0))
sock.settimeout(0.1)
print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
raw = []
while not done.is_set():
    try:
        data = sock.recv(65536)
    except socket.timeout:
        continue
    raw.append((time.perf_counter(), data))
out = []
for received, data in raw:
    values = {}
    for item in OscBundle(data):
        values[item.address] = item.params
    out.append([received, values["/hop/frame"][0], values["/hop/time"][0]])
print(json.dumps(out), flush=True)
"""


class ReceiverProcess:
    """A UDP receiver in its own process: arrival time (perf_counter, system-wide), frame index and
    capture time of every datagram, handed back when it is closed."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.process.stdout.readline())["port"]

    def finish(self, timeout: float = 30.0) -> list[tuple[float, int, float]]:
        try:
            out, _ = self.process.communicate("", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # our own child, by its handle
            self.process.wait()
            return []
        return [tuple(row) for row in json.loads(out or "[]")]


def _first_arrivals(rows, start: float, end: float) -> list[float]:
    """Arrival minus capture time of each frame's first datagram (later sends repeat its capture time)."""
    seen, lat = set(), []
    for received, _, capture in rows:
        if capture in seen:
            continue
        seen.add(capture)
        if start <= received <= end:
            lat.append(received - capture)
    return lat


class StampCheck:
    """Wraps a ring's ``write`` on the audio thread: records how far each block's capture stamp lies
    after the callback's own clock reading and, with ``clamp``, stamps no block later than that reading.

    The newest sample of a block cannot have been captured after the callback that delivers it began.
    Through PortAudio's ALSA ``pulse`` device the input ADC time often equals the callback's current
    time, and MicCapture's mapping (ADC time + block length) then stamps the block's end one block
    (10 ms) in the future, so the latency measured from it is up to 10 ms too small. Clamping the stamp
    to the callback's clock reading keeps the measured latency from being flattered.
    """

    def __init__(self, ring, clamp: bool, capacity: int = 1 << 16):
        self.offsets = np.zeros(capacity, dtype=np.float64)
        self.count = 0
        self.clamp = clamp
        self._write = ring.write
        ring.write = self.write

    def write(self, block, end_capture_time: float) -> None:
        now = time.perf_counter()
        self.offsets[self.count % len(self.offsets)] = end_capture_time - now
        self.count += 1
        self._write(block, min(end_capture_time, now) if self.clamp else end_capture_time)

    def summary(self) -> dict:
        values = self.offsets[: min(self.count, len(self.offsets))]
        return {"blocks": int(values.size), "stamp_after_callback_ms": percentiles_ms(values),
                "blocks_stamped_in_the_future": int((values > 0).sum()), "clamped": self.clamp}


def run_latency_condition(model, mic, speech: np.ndarray, threads: int, asr_on: bool,
                          send_rate: float = 60.0, settle_s: float = 1.0, clamp_stamps: bool = True,
                          lm_weights: str = "fp32") -> dict:
    """One engine run on the virtual microphone; ``speech`` is fed once at real-time pace."""
    import torch

    from hop.engine.session import OutputSpec, SessionOptions, build_session
    from hop.engine.status import AsrState, EngineStatus
    from hop.profiles import EngineSettings

    torch.set_num_threads(threads)  # before the engine thread's first parallel region: it takes this value
    status = EngineStatus()
    receiver = ReceiverProcess()
    options = SessionOptions(mic="pulse", samplerate=SAMPLE_RATE,
                             engine=EngineSettings(send_rate=send_rate, threads=threads, asr=asr_on,
                                                   lm_weights=lm_weights),
                             outputs=(OutputSpec("osc", "127.0.0.1", receiver.port),))
    session = build_session(options, model=(model, "hop-bench"), status=status)  # the same wiring as hop-live
    engine, asr = session.engine, session.pipeline.asr
    ring, capture = engine.ring, engine.source
    stamps = StampCheck(ring, clamp_stamps)
    engine.latency_trace = []
    seen_threads: list[int] = []
    failure: list[BaseException] = []

    def loop():
        seen_threads.append(torch.get_num_threads())
        try:
            session.run()
        except BaseException as error:  # reported below, in the caller's thread
            failure.append(error)

    runner = threading.Thread(target=loop, name="hop-bench-engine")
    rows: list = []
    try:
        runner.start()
        deadline = time.monotonic() + 30
        while ring.written < SAMPLE_RATE // 2 and not failure:
            if time.monotonic() > deadline:
                raise RuntimeError("the virtual microphone delivered no audio within 30 s")
            time.sleep(0.05)
        if asr is not None:
            deadline = time.monotonic() + 120
            while asr.state == AsrState.STARTING and time.monotonic() < deadline:
                time.sleep(0.1)  # the engine thread polls the ASR and flips its state when it is ready
        time.sleep(settle_s)
        overflows_before = capture.overflows
        load_before = os.getloadavg()[0]
        mic.feed(speech)
        mic.wait_drained(len(speech) / SAMPLE_RATE + 60)
        speech_start, speech_end = mic.clip_starts[-1], mic.clip_ends[-1]
        time.sleep(0.5)
        load_after = os.getloadavg()[0]
    finally:
        engine.stop()
        runner.join(timeout=15)  # the session closes its outputs and the ASR
        rows = receiver.finish()
    if failure:
        raise RuntimeError(f"the engine failed: {failure[0]!r}") from failure[0]
    window_end = speech_end + 0.1
    engine_lat = [lat for sent, lat in engine.latency_trace if speech_start <= sent <= window_end]
    receiver_lat = _first_arrivals(rows, speech_start, window_end)
    snap = status.snapshot()
    span = speech_end - speech_start
    return {
        "threads": threads,
        "lm_weights": lm_weights,
        "threads_in_engine_thread": seen_threads[0] if seen_threads else None,
        "asr": asr_on,
        "asr_state": snap["asr"]["state"] if asr_on else "off",
        "asr_words": snap["asr"]["words"] if asr_on else 0,
        "asr_lag_ms": snap["asr"]["lag_ms"] if asr_on else None,
        "speech_seconds": round(span, 2),
        "fresh_frames": len(engine_lat),
        "fresh_fps": round(len(engine_lat) / span, 2) if span > 0 else None,
        "latency_capture_to_socket_ms": percentiles_ms(engine_lat),
        "latency_capture_to_receiver_ms": percentiles_ms(receiver_lat),
        "model_ms_per_frame": round(1000 * session.pipeline.model_seconds / max(session.pipeline.model_frames, 1), 3),
        "capture_stamps": stamps.summary(),
        "frames_skipped": snap["frames_skipped"],
        "frames_dropped": snap["frames_dropped"],
        "input_overflows": capture.overflows - overflows_before,
        "ring_overruns": snap["ring_overruns"],
        "datagrams_received": len(rows),
        "loadavg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "errors": snap["recent_errors"],
    }


def cmd_latency(args) -> dict:
    import torch

    from hop.engine.backends import set_lm_weights
    from hop.engine.capture import rescan_devices
    from hop.tools.virtual_mic import VirtualMic, available

    reason = available()
    if reason:
        raise SystemExit(f"hop-bench latency: no virtual microphone: {reason}")
    model, note = model_for(args)
    speech, origin = load_speech(args.seconds, args.speech_dir)
    asr_modes = {"off": [False], "on": [True], "both": [False, True]}[args.asr]
    weights = args.lm_weights if model.lm is not None else ["fp32"]  # without LM layers there is nothing to quantise
    default_threads = torch.get_num_threads()
    conditions = []
    with tempfile.TemporaryDirectory(prefix="hop-bench-") as tmp:
        mic = VirtualMic(Path(tmp) / "pulse")
        mic.root.mkdir()
        saved = {k: os.environ.get(k) for k in mic.env()}
        try:
            mic.start()
            os.environ.update(mic.env())
            rescan_devices()  # PortAudio must see the private daemon
            for threads in args.threads:
                for lm_weights in weights:
                    for asr_on in asr_modes:
                        print(f"latency: threads {threads}, LM {lm_weights}, ASR {'on' if asr_on else 'off'}, "
                              f"{args.seconds:.0f} s of speech ...", flush=True)
                        conditions.append(run_latency_condition(
                            model, mic, speech, threads, asr_on, args.send_rate,
                            clamp_stamps=not args.raw_capture_stamps, lm_weights=lm_weights))
        finally:
            set_lm_weights(model, "fp32")  # back to fp32 for the caller (exact after int8; bf16 rounding stays)
            mic.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            rescan_devices()
            torch.set_num_threads(default_threads)
    rows = []
    for c in conditions:
        e, r = c["latency_capture_to_socket_ms"], c["latency_capture_to_receiver_ms"]
        rows.append([c["threads"], c["lm_weights"], "on" if c["asr"] else "off", c["fresh_frames"], e["median"],
                     e["p95"], e["p99"], e["max"], r["p95"], c["frames_skipped"], c["model_ms_per_frame"],
                     c["loadavg_1min_before_after"][1]])
    print_table("mic-to-wire latency, ms (capture time of the newest sample -> datagram sent)",
                ["threads", "lm", "asr", "frames", "median", "p95", "p99", "max", "rx p95", "skipped", "model ms",
                 "load"], rows)
    return {
        "benchmark": "latency",
        "goal": "p95 <= 25 ms on the 2-core CPU, with and without ASR",
        "path": "VirtualMic (PulseAudio pipe source) -> MicCapture (PortAudio 'pulse', 16 kHz mono) -> Engine "
                "(eager CPU) -> OscSink (native /hop/ bundles, UDP) -> receiver process",
        "latency_definition": "capture_to_socket: perf_counter capture time of the frame's newest audio sample "
                              "(PortAudio ADC time of its block, no later than the callback that delivered it: see "
                              "capture_stamps) to just after the datagram was sent (the "
                              "engine's own status figure); capture_to_receiver: the same capture time to the "
                              "datagram's arrival in another process. Fresh frames only (one per model frame); "
                              "frames sent while the fed speech played.",
        "model": note,
        "speech": origin,
        "pose_fps": model.cfg.fps,
        "send_rate_hz": args.send_rate,
        "capture_stamps_clamped_to_callback_time": not args.raw_capture_stamps,
        "conditions": conditions,
    }


# -- windowed vs streaming ------------------------------------------------------------------

def cmd_windowed(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    audio, origin = load_speech(args.seconds, args.speech_dir)
    model, note = model_for(args)
    fps = model.cfg.fps
    stepper = StreamingStepper(model, audio)
    for _ in range(args.warmup):
        stepper()
    stepper = StreamingStepper(model, audio)  # timed from the first frame of the same audio
    times, cpu_times = _time_steps(stepper, len(stepper.chunks), 0)
    stream_audio_s = len(stepper.chunks) / fps
    step = percentiles_ms(times)
    period_ms = 1000.0 / fps
    streaming = {
        "model": note,
        "pose_fps": fps,
        "frames": len(times),
        "audio_seconds": round(stream_audio_s, 3),
        "step_ms": step,
        "step_cpu_ms": percentiles_ms(cpu_times),
        "compute_s_per_audio_s": round(sum(times) / stream_audio_s, 4),
        "cpu_s_per_audio_s": round(sum(cpu_times) / stream_audio_s, 4),
        # a frame's audio starts one frame period before its newest sample; its pose follows the step
        "algorithmic_latency_ms": {"median": round(period_ms + step["median"], 2),
                                   "p95": round(period_ms + step["p95"], 2),
                                   "max": round(period_ms + step["max"], 2)},
    }

    paper = paper_model()
    pfps = paper.cfg.fps
    runner = WindowedRunner(paper, audio, window=args.window, seeds=args.seeds, stride=args.stride)
    runner()  # first call: prototype cache, allocator
    runner = WindowedRunner(paper, audio, window=args.window, seeds=args.seeds, stride=args.stride)
    wtimes, wcpu = _time_steps(runner, len(runner.starts), 0)
    window = percentiles_ms(wtimes)
    covered_frames = runner.starts[-1] + args.window
    covered_s = covered_frames / pfps
    # Frame t of the window starting at s is ready when the window's audio has all arrived (its end,
    # (s + window) / fps) plus the window's compute; measured from the start of the frame's audio.
    waits = (args.window - np.arange(args.seeds, args.window)) / pfps * 1000.0
    compute = window["median"]
    windowed = {
        "model": "paper mode HopConfig(causal=False, fps=15), untrained (timing only)",
        "pose_fps": pfps,
        "window_frames": args.window,
        "seed_frames": args.seeds,
        "stride_frames": runner.stride,
        "windows": len(wtimes),
        "audio_seconds": round(covered_s, 3),
        "window_ms": window,
        "window_cpu_ms": percentiles_ms(wcpu),
        "compute_s_per_audio_s": round(sum(wtimes) / covered_s, 4),
        "cpu_s_per_audio_s": round(sum(wcpu) / covered_s, 4),
        "algorithmic_latency_ms": {
            "newest_frame": round(float(waits.min()) + compute, 1),
            "median_frame": round(float(np.median(waits)) + compute, 1),
            "oldest_new_frame": round(float(waits.max()) + compute, 1),
            "first_pose_of_the_stream": round(args.window / pfps * 1000.0 + compute, 1),
        },
        "new_window_every_ms": round(runner.stride / pfps * 1000.0, 1),
    }
    print_table("streaming vs windowed (same audio)",
                ["mode", "unit", "compute median ms", "p95", "p99", "cpu median ms", "compute s / audio s",
                 "cpu s / audio s", "latency ms (typ / worst)"],
                [["streaming", f"1 frame @{fps} fps", step["median"], step["p95"], step["p99"],
                  streaming["step_cpu_ms"]["median"], streaming["compute_s_per_audio_s"],
                  streaming["cpu_s_per_audio_s"],
                  f"{streaming['algorithmic_latency_ms']['median']:.0f} / "
                  f"{streaming['algorithmic_latency_ms']['max']:.0f}"],
                 ["windowed", f"{args.window} frames @{pfps} fps", window["median"], window["p95"], window["p99"],
                  windowed["window_cpu_ms"]["median"], windowed["compute_s_per_audio_s"],
                  windowed["cpu_s_per_audio_s"],
                  f"{windowed['algorithmic_latency_ms']['median_frame']:.0f} / "
                  f"{windowed['algorithmic_latency_ms']['oldest_new_frame']:.0f}"]])
    return {
        "benchmark": "windowed",
        "speech": origin,
        "torch_threads": args.threads,
        "latency_definition": "from the start of a pose frame's audio to the pose being computed: streaming = "
                              "one frame period + step compute; windowed = wait for the rest of the window's "
                              "audio + the window's compute",
        "streaming": streaming,
        "windowed": windowed,
        "ratio_compute_windowed_over_streaming": round(windowed["compute_s_per_audio_s"]
                                                       / max(streaming["compute_s_per_audio_s"], 1e-9), 3),
        "ratio_cpu_windowed_over_streaming": round(windowed["cpu_s_per_audio_s"]
                                                   / max(streaming["cpu_s_per_audio_s"], 1e-9), 3),
    }


# -- concurrent streams -------------------------------------------------------------------

def _time_steps(stepper, frames: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread's) seconds of each of ``frames`` calls after ``warmup`` calls.

    With one torch thread all compute runs on the calling thread, so its CPU time is what a step
    costs on an idle core; wall time adds whatever the other processes on a shared machine take."""
    for _ in range(warmup):
        stepper()
    wall, cpu = [], []
    for _ in range(frames):
        started, started_cpu = time.perf_counter(), time.thread_time()
        stepper()
        wall.append(time.perf_counter() - started)
        cpu.append(time.thread_time() - started_cpu)
    return wall, cpu


def cmd_streams(args) -> dict:
    import torch

    from hop.engine.backends import set_lm_weights

    torch.set_num_threads(args.threads)
    model, note = model_for(args)
    period_ms = 1000.0 / model.cfg.fps
    budget_ms = args.headroom * period_ms
    speech, origin = load_speech(args.seconds, args.speech_dir)
    max_n = max(args.batched_sizes + args.loop_sizes)
    # each stream hears the speech from its own offset, so no two streams are identical
    shift = len(speech) // max(max_n, 1)
    audio = np.stack([np.roll(speech, i * shift) for i in range(max_n)])
    runs = []
    best: dict[str, int] = {}
    for precision in args.lm_weights:
        if precision != "fp32" and model.lm is None:
            continue
        set_lm_weights(model, precision)
        for mode, sizes in (("batched", args.batched_sizes), ("loop", args.loop_sizes)):
            failures = 0
            for n in sizes:
                stepper = StreamingStepper(model, audio[:n], batch=n) if mode == "batched" else \
                    LoopStepper(model, audio[:n], n)
                load = os.getloadavg()[0]
                times, cpu_times = _time_steps(stepper, args.frames, args.warmup)
                stats, cpu = percentiles_ms(times), percentiles_ms(cpu_times)
                ok = stats["p99"] <= budget_ms
                ok_cpu = cpu["p99"] <= budget_ms
                runs.append({"mode": mode, "precision": precision, "streams": n, "step_ms": stats,
                             "step_cpu_ms": cpu, "p99_over_period": round(stats["p99"] / period_ms, 3),
                             "sustains": ok, "sustains_by_cpu_time": ok_cpu, "loadavg_1min": round(load, 2)})
                print(f"streams: {precision:7s} {mode:7s} N={n:3d}  median {stats['median']:7.2f}  "
                      f"p99 {stats['p99']:7.2f} ms (cpu {cpu['median']:.2f} / {cpu['p99']:.2f})  "
                      f"{'ok' if ok else 'over'}", flush=True)
                key = f"{mode}/{precision}"
                if ok:
                    best[key] = max(best.get(key, 0), n)
                if ok_cpu:
                    best[key + "/cpu"] = max(best.get(key + "/cpu", 0), n)
                if ok or ok_cpu:
                    failures = 0
                else:
                    failures += 1
                    if failures >= args.stop_after:
                        break
    rows = [[r["precision"], r["mode"], r["streams"], r["step_ms"]["median"], r["step_ms"]["p95"],
             r["step_ms"]["p99"], f"{100 * r['p99_over_period']:.0f}%", "yes" if r["sustains"] else "no",
             r["step_cpu_ms"]["median"], r["step_cpu_ms"]["p99"], "yes" if r["sustains_by_cpu_time"] else "no"]
            for r in runs]
    print_table(f"concurrent streams at {model.cfg.fps} fps (step time per frame period; budget p99 <= "
                f"{budget_ms:.1f} ms)", ["precision", "mode", "N", "median", "p95", "p99", "p99/period", "real time", "cpu median",
                 "cpu p99", "by cpu"],
                rows)
    summary = {}
    for precision in dict.fromkeys(r["precision"] for r in runs):
        batched, loop = best.get(f"batched/{precision}", 0), best.get(f"loop/{precision}", 0)
        batched_cpu, loop_cpu = best.get(f"batched/{precision}/cpu", 0), best.get(f"loop/{precision}/cpu", 0)
        summary[precision] = {"max_streams_batched": batched, "max_streams_loop": loop,
                              "batched_over_loop": round(batched / loop, 2) if loop else None,
                              "by_cpu_time": {"max_streams_batched": batched_cpu, "max_streams_loop": loop_cpu,
                                              "batched_over_loop": round(batched_cpu / loop_cpu, 2)
                                              if loop_cpu else None}}
        print(f"{precision}: batched sustains {batched} streams, per-stream loop {loop}"
              + (f" ({batched / loop:.1f}x)" if loop else "")
              + f"; by CPU time (an idle core): {batched_cpu} vs {loop_cpu}")
    return {
        "benchmark": "streams",
        "goal": ">= 16 streams at 30 fps, >= 4x the per-stream loop",
        "criterion": f"p99 step time (all streams advanced one frame) <= {args.headroom:.0%} of the "
                     f"{period_ms:.1f} ms frame period; wall clock (sustains) and this thread's CPU time "
                     "(sustains_by_cpu_time: what an uncontended core would do; the machine is shared)",
        "model": note,
        "speech": origin,
        "torch_threads": args.threads,
        "frames_per_run": args.frames,
        "summary": summary,
        "runs": runs,
    }


# -- backends -------------------------------------------------------------------------------

def cmd_backends(args) -> dict:
    import torch

    from hop.engine.backends import BackendError, BackendOptions, check_device, prepare

    result = {"benchmark": "backends", "device": args.device, "torch_threads": args.threads}
    try:
        check_device(args.device)
    except BackendError as error:
        result["gpu"] = f"no GPU: {error}"
        result["backends"] = []
        print(f"backends: no GPU: {error}")
        return result
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    torch.set_num_threads(args.threads)
    names = args.backends or (["eager", "compile"] + (["tensorrt"] if args.device.startswith("cuda") else []))
    speech, origin = load_speech(args.seconds, args.speech_dir)
    result["speech"] = origin
    rows, entries = [], []
    for name in names:
        # fresh weights per backend: nothing carries over
        model, note = model_for(args)
        entry = {"backend": name, "model": note}
        try:
            started = time.perf_counter()
            step = prepare(model, BackendOptions(name, args.device, args.threads, args.lm_weights))
            stepper = StreamingStepper(model, speech, step=step)
            # the compiled backends build one graph per LM phase on first use
            first = [_time_steps(stepper, 1, 0)[0][0] for _ in range(model.cfg.lm_stride)]
            entry["prepare_and_first_frames_s"] = round(time.perf_counter() - started, 2)
            entry["first_frames_ms"] = [round(1000 * t, 1) for t in first]
            times, cpu_times = _time_steps(stepper, args.frames, args.warmup)
            entry["step_ms"] = percentiles_ms(times)
            entry["step_cpu_ms"] = percentiles_ms(cpu_times)
            entry["lm_weights"] = args.lm_weights
            if args.lm_weights != "fp32" and model.lm is not None:
                entry["pose_deviation_from_fp32_lm"] = _deviation_from_fp32(args, model, step, speech)
            rows.append([name, entry["step_ms"]["median"], entry["step_ms"]["p95"], entry["step_ms"]["p99"],
                         entry["step_cpu_ms"]["median"], entry["prepare_and_first_frames_s"]])
        except BackendError as error:
            entry["unavailable"] = str(error)
            rows.append([name, None, None, None, None, f"unavailable: {error}"[:60]])
        entries.append(entry)
        print(f"backends: {name} done", flush=True)
    print_table(f"per-frame step time on {args.device}, ms (batch 1, {args.threads} thread(s))",
                ["backend", "median", "p95", "p99", "cpu median", "compile/prepare s"], rows)
    result["backends"] = entries
    return result


def _deviation_from_fp32(args, model, step, speech: np.ndarray, frames: int = 300) -> dict:
    """How far the poses move when only the LM's weight format changes: the same audio
    through a fresh fp32 copy and through ``model`` as prepared, frame by frame."""
    reference_model, _ = model_for(args)  # same seed, same weights
    reference_model.to(args.device)
    runs = []
    for m, s in ((reference_model, None), (model, step)):
        stepper = StreamingStepper(m, speech, step=s)
        runs.append(np.concatenate([stepper()[0] for _ in range(frames)]))
    reference, poses = runs
    error = np.abs(poses - reference)
    spread = float(reference.std(axis=0).mean())
    return {"frames": frames, "mean_abs": round(float(error.mean()), 5), "max_abs": round(float(error.max()), 5),
            "pose_spread": round(spread, 5), "mean_abs_over_spread": round(float(error.mean()) / spread, 4)}


def model_for(args):
    """--fps N: the untrained default architecture at N fps; else --checkpoint or hop-live's default."""
    return _untrained(args.fps) if args.fps else load_streaming_model(args.checkpoint)


def _untrained(fps: int):
    """The default architecture at another pose rate (the per-frame cost the model issue asks for)."""
    import torch

    from hop.model import Hop, HopConfig

    torch.manual_seed(0)
    return Hop(HopConfig(fps=fps)).eval(), f"untrained default HopConfig at {fps} fps"


# -- command line -----------------------------------------------------------------------------

def _weights_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or not set(values) <= set(LM_WEIGHTS):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(LM_WEIGHTS)}, got {text!r}")
    return values

def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hop-bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, seconds: float):
        p.add_argument("--out", type=Path, default=None, help="JSON path (default results/<name>-<date>.json)")
        p.add_argument("--checkpoint", type=Path, default=None,
                       help="causal checkpoint (default: hop-live's default, else an untrained model)")
        p.add_argument("--speech-dir", type=Path, default=None, help=f"folder of wavs (default {SPEECH_DIR})")
        p.add_argument("--seconds", type=float, default=seconds, help="seconds of speech")
        p.add_argument("--fps", type=int, default=None,
                       help="time an untrained default model at this pose rate instead of a checkpoint")

    p = sub.add_parser("latency", help="mic-to-wire latency through the virtual microphone")
    common(p, 30.0)
    p.add_argument("--threads", type=_int_list, default=[1, 2], help="torch thread counts to run (default 1,2)")
    p.add_argument("--asr", choices=["off", "on", "both"], default="both")
    p.add_argument("--send-rate", type=float, default=60.0, help="sends per second (hop-live's default 60)")
    p.add_argument("--lm-weights", type=_weights_list, default=["fp32"],
                   help="comma-separated LM weight formats to run side by side (default fp32, hop-live's default)")
    p.add_argument("--raw-capture-stamps", action="store_true",
                   help="keep MicCapture's capture stamps even when they lie after the callback (see StampCheck)")

    p = sub.add_parser("windowed", help="streaming engine vs the paper's windowed offline mode")
    common(p, 30.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--window", type=int, default=34)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--stride", type=int, default=None, help="frames between windows (default window - seeds)")
    p.add_argument("--warmup", type=int, default=10)

    p = sub.add_parser("streams", help="concurrent streams: batched vs a per-stream loop")
    common(p, 20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batched-sizes", type=_int_list, default=[1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64])
    p.add_argument("--loop-sizes", type=_int_list, default=[1, 2, 3, 4, 5, 6, 8, 10, 12, 16])
    p.add_argument("--frames", type=int, default=150, help="timed frames per configuration")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--headroom", type=float, default=0.8, help="p99 budget as a fraction of the frame period")
    p.add_argument("--stop-after", type=int, default=2, help="stop a mode after this many sizes in a row fail")
    p.add_argument("--lm-weights", type=_weights_list, default=["fp32", "int8", "bf16"],
                   help="comma-separated LM weight formats to compare, in this order (bf16 last: it rounds the weights)")

    p = sub.add_parser("backends", help="eager vs torch.compile (vs TensorRT on CUDA) step time")
    common(p, 20.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backends", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="comma-separated (default eager,compile and tensorrt on cuda)")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--lm-weights", choices=LM_WEIGHTS, default="fp32",
                   help="the frozen LM's weight format (int8: eager CPU only)")
    return parser


COMMANDS = {"latency": cmd_latency, "windowed": cmd_windowed, "streams": cmd_streams, "backends": cmd_backends}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine = machine_info()
    result = COMMANDS[args.command](args)
    result = {"benchmark": args.command, "machine": machine, **result,
              "command": "hop-bench " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_result(args.out, args.command, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
