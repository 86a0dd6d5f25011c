"""hop-soak: run the real engine for a long time and report whether it drifts, leaks or fails.

    hop-soak --minutes 60 --out results/soak-60min.json
    hop-soak --minutes 1.5 --warmup-minutes 0.25 --out /tmp/soak.json   # the CI-sized run

What runs is the live path, not a simulation of it: a virtual microphone (a
private PulseAudio daemon with a pipe source, hop.tools.virtual_mic) is fed real
speech (LJSpeech clips from ../shared/data/speech when present, espeak-ng
otherwise) with silences of 1-4 s between clips, read through PortAudio by
MicCapture, through the runtime loop with ASR on, into a native OSC sink (a UDP
receiver in another process counts the datagrams), a WebSocket sink (a client in
another process counts the messages) and a BVH recorder (when hop.bridges.bvh
exists).

The JSON report has, per minute: sends emitted, frames skipped, latency
p50/p95/p99, RSS of the engine process (and of the ASR worker), ring overruns,
input overflows, load average; and for the run: frames emitted vs expected,
exceptions, and the pass/fail goals:

- zero exceptions (errors the engine recorded, sink errors, uncaught thread exceptions);
- RSS growth <= 5 % from the end of the warm-up to the end;
- p99 latency drift <= 10 % between the first and the last ten minutes after
  warm-up (thirds of the measured time when it is shorter than 30 minutes);
- every send accounted for against the audio captured (captured samples / rate x
  send rate): written, in flight, or lost for a counted reason (skipped frame,
  superseded extrapolation), none unaccounted, counted losses <= 0.1 %. The capture
  clock's drift against the system clock is reported as its own figure.

Exit status: 0 when every goal passed, 1 when one failed, 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hop.profiles import DEFAULT_PROFILE

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SPEECH = REPO_ROOT.parent / "shared" / "data" / "speech" / "ljspeech"
SAMPLE_RATE = 16_000
ESPEAK_TEXT = ("The quick brown fox jumps over the lazy dog. Every morning I walk to the station and buy a "
               "newspaper. Please hand me the red book on the table, and close the door behind you.")

# A UDP receiver in its own process: prints its port, counts datagrams, prints the count at stdin EOF.
_UDP_COUNTER = r"""
import socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
count = [0, 0]
def read():
    while True:
        try:
            data = s.recv(65536)
        except OSError:
            return
        count[0] += 1
        count[1] += len(data)
threading.Thread(target=read, daemon=True).start()
sys.stdin.read()
print(count[0], count[1], flush=True)
"""

# A WebSocket client in its own process: connects, counts messages, prints the count at stdin EOF.
_WS_COUNTER = r"""
import sys, threading
from websockets.sync.client import connect
count = [0, 0, ""]
def read():
    try:
        with connect(sys.argv[1], max_size=None, open_timeout=20) as ws:
            print("connected", flush=True)
            for message in ws:
                count[0] += 1
                count[1] += len(message)
    except Exception as error:
        count[2] = repr(error)
        print("failed", flush=True)
threading.Thread(target=read, daemon=True).start()
sys.stdin.read()
print(count[0], count[1], count[2] or "-", flush=True)
"""


# -- measurements --------------------------------------------------------------------------

class LatencyTrace:
    """What Engine.latency_trace appends to: (sent_at, latency_s) into preallocated arrays.

    A Python list of tuples would grow the RSS the soak is measuring; these arrays
    are allocated once (pages are touched as they fill: ~12 bytes a frame).
    """

    def __init__(self, capacity: int):
        self.sent_at = np.zeros(capacity, dtype=np.float64)
        self.latency_ms = np.zeros(capacity, dtype=np.float32)
        self.count = 0
        self.overflow = 0

    def append(self, item: tuple[float, float]) -> None:
        if self.count >= len(self.sent_at):
            self.overflow += 1
            return
        self.sent_at[self.count] = item[0]
        self.latency_ms[self.count] = item[1] * 1000.0
        self.count += 1

    def between(self, start: float, end: float) -> np.ndarray:
        times = self.sent_at[: self.count]
        return self.latency_ms[: self.count][(times >= start) & (times < end)]


def rss_mb(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 2)
    except OSError:
        return None
    return None


def percentiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3), "count": int(len(values))}


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import torch
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "torch": torch.__version__, "git_commit": commit}


# -- speech ---------------------------------------------------------------------------------

def load_clips(speech_dir: Path, max_seconds: float, work: Path) -> tuple[list[np.ndarray], str]:
    """Real speech clips at 16 kHz: LJSpeech when present, espeak-ng otherwise."""
    from hop.engine.audio_file import load_audio_16k_mono
    clips, total = [], 0
    if speech_dir.is_dir():
        for path in sorted(speech_dir.glob("*.wav")):
            clip = load_audio_16k_mono(path)
            clips.append(clip)
            total += len(clip)
            if total >= max_seconds * SAMPLE_RATE:
                break
    if clips:
        return clips, f"LJSpeech ({len(clips)} clips, {total / SAMPLE_RATE:.0f} s) from {speech_dir}"
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(f"no speech: {speech_dir} is absent and espeak-ng is not installed (run setup.sh)")
    wav = work / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), ESPEAK_TEXT], check=True, capture_output=True)
    clip = load_audio_16k_mono(wav)
    return [clip], f"espeak-ng ({len(clip) / SAMPLE_RATE:.0f} s)"


class SpeechLoop:
    """Feeds the clips to the virtual microphone one after another, with silences between."""

    def __init__(self, mic, clips: list[np.ndarray], seed: int, level: float = 0.8):
        self.mic = mic
        self.clips = clips
        self.rng = np.random.default_rng(seed)
        self.level = level
        self.speech_s = 0.0
        self.silence_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-speech", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            clip = self.clips[index % len(self.clips)]
            index += 1
            self.mic.feed(clip * self.level)
            while len(self.mic.clip_ends) < self.mic.clips_fed and not self._stop.wait(0.05):
                pass
            self.speech_s += len(clip) / SAMPLE_RATE
            gap = float(self.rng.uniform(1.0, 4.0))
            self.silence_s += gap
            self._stop.wait(gap)


class CountingStatus:
    """Mixin-free wrapper: counts every error the engine records (its deque keeps only 20)."""

    @staticmethod
    def install(status) -> dict:
        errors = {"count": 0, "first": []}
        original = status.record_error

        def record_error(message: str) -> None:
            errors["count"] += 1
            if len(errors["first"]) < 50:
                errors["first"].append(f"{time.perf_counter():.3f} {message}")
            original(message)

        status.record_error = record_error
        return errors


@dataclass
class Sample:
    at: float
    frames_emitted: int
    frames_skipped: int
    accounting: dict  # the engine's send accounting (EngineStatus.accounting), one consistent moment


# -- the run ---------------------------------------------------------------------------------

def run_soak(args) -> dict:
    from dataclasses import replace

    from hop.engine.capture import rescan_devices
    from hop.engine.session import OutputSpec, SessionOptions, build_session
    from hop.engine.status import EngineStatus
    from hop.profiles import load_profile
    from hop.tools.virtual_mic import VirtualMic, available

    reason = available()
    if reason:
        raise RuntimeError(f"no virtual microphone: {reason}")
    profile = load_profile(args.profile)
    work = Path(tempfile.mkdtemp(prefix="hop-soak-"))
    started_wall = time.time()
    machine = machine_info()
    load_start = os.getloadavg()
    report: dict = {"kind": "hop-soak", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime()),
                    "machine": machine, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                 for k, v in vars(args).items()}}
    thread_exceptions: list[str] = []
    previous_hook = threading.excepthook

    def excepthook(hook_args):
        thread_exceptions.append("".join(traceback.format_exception(
            hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback))[-2000:])
        previous_hook(hook_args)

    threading.excepthook = excepthook
    mic = VirtualMic(work / "pulse")
    mic.root.mkdir()
    helpers: list[subprocess.Popen] = []
    speech = None
    try:
        mic.start()
        os.environ.update(mic.env())
        rescan_devices()
        clips, speech_note = load_clips(Path(args.speech_dir), 300.0, work)
        report["speech"] = speech_note

        # outputs: OSC to a counting receiver process, WebSocket with a counting client process, BVH
        udp = subprocess.Popen([sys.executable, "-c", _UDP_COUNTER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        helpers.append(udp)
        osc_port = int(udp.stdout.readline())
        bvh_path = Path(args.bvh) if args.bvh else work / "soak.bvh"
        duration = args.minutes * 60.0
        options = SessionOptions(
            mic="pulse", checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            engine=replace(profile.engine, asr=not args.no_asr), motion=profile.motion,
            outputs=(OutputSpec("osc", "127.0.0.1", osc_port), OutputSpec("ws", "127.0.0.1", 0),
                     OutputSpec("bvh", path=bvh_path)),
            duration_s=duration)
        status = EngineStatus()
        errors = CountingStatus.install(status)
        session = build_session(options, status=status)  # the same wiring as hop-live
        report["model"] = session.model_note
        engine = session.engine
        ws = next(sink for sink in session.outputs.sinks if hasattr(sink, "viewer_url"))
        ws_client = subprocess.Popen([sys.executable, "-c", _WS_COUNTER, ws.url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        helpers.append(ws_client)
        report["outputs"] = {"osc": f"127.0.0.1:{osc_port}", "ws": ws.url,
                             "ws_client": ws_client.stdout.readline().strip(), "bvh": str(bvh_path)}

        pose_fps = session.pipeline.pose_fps
        trace = LatencyTrace(int(duration * pose_fps * 1.2) + 10_000)
        engine.latency_trace = trace
        per_frame = session.pipeline.send_clock.per_frame
        asr = session.pipeline.asr

        speech = SpeechLoop(mic, clips, args.seed)
        minutes: list[dict] = []
        samples: list[Sample] = []
        stop = threading.Event()
        t0 = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)

        def sample_minute(index: int, start: float) -> None:
            now = time.perf_counter()
            snap = status.snapshot()
            samples.append(Sample(now, snap["frames_emitted"], snap["frames_skipped"], snap["accounting"]))
            usage = resource.getrusage(resource.RUSAGE_SELF)
            previous = samples[-2] if len(samples) > 1 else Sample(t0, 0, 0, {})
            minutes.append({
                "interval": index, "t_s": round(now - t0, 2),
                "rss_mb": rss_mb(), "asr_rss_mb": rss_mb(asr.pid) if asr is not None and asr.pid else None,
                "sends": snap["frames_emitted"] - previous.frames_emitted,
                "skipped": snap["frames_skipped"] - previous.frames_skipped,
                "latency_ms": percentiles(trace.between(start, now)),
                "ring_overruns": snap["ring_overruns"], "input_overflows": snap["input_overflows"],
                "frames_dropped": snap["frames_dropped"], "source": snap["source"]["state"],
                "sends_superseded": snap["accounting"].get("sends_superseded"),
                "sends_unaccounted": snap["accounting"].get("sends_unaccounted"),
                "capture_clock_drift_ppm": snap["accounting"].get("capture_clock_drift_ppm"),
                "device_losses": snap["source"]["losses"], "asr": snap["asr"]["state"],
                "asr_words": snap["asr"]["words"], "errors": errors["count"],
                "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            })
            if not args.quiet:
                m = minutes[-1]
                print(f"hop-soak: {now - t0:7.1f} s  sends {m['sends']}  skipped {m['skipped']}  "
                      f"p99 {m['latency_ms']['p99']} ms  rss {m['rss_mb']} MB  load {m['loadavg'][0]}  "
                      f"errors {m['errors']}  asr {m['asr']}", file=sys.stderr, flush=True)

        def monitor() -> None:
            index, start = 1, t0
            while True:
                due = t0 + min(index * args.interval_s, duration)
                if stop.wait(max(0.0, due - time.perf_counter())):
                    return
                sample_minute(index, start)
                start = due
                if due >= t0 + duration:
                    engine.stop()
                    return
                index += 1

        def on_signal(signum, _frame):
            print(f"\nhop-soak: {signal.Signals(signum).name}, stopping early", file=sys.stderr)
            report["stopped_early"] = signal.Signals(signum).name
            engine.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        speech.start()
        watcher = threading.Thread(target=monitor, name="soak-monitor", daemon=True)
        watcher.start()
        engine_error = None
        summary: dict = {}
        try:
            summary = session.run()["summary"]  # closes the outputs at the end
        except Exception as error:  # counted, not hidden: the report says what it was
            engine_error = "".join(traceback.format_exception(error))[-3000:]
        ended = time.perf_counter()
        stop.set()
        watcher.join(timeout=5)
        speech.stop()
        report["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime())
        report["wall_s"] = round(time.time() - started_wall, 1)
        report["engine_s"] = round(ended - t0, 2)
        report["speech_fed_s"] = round(speech.speech_s, 1)
        report["silence_fed_s"] = round(speech.silence_s, 1)
        report["pose_fps"] = pose_fps
        report["send_rate"] = pose_fps * per_frame
        report["final_status"] = status.snapshot()
        report["interval_s"] = args.interval_s
        report["timeline"] = minutes
        report["engine_exception"] = engine_error
        report["thread_exceptions"] = thread_exceptions
        report["recorded_errors"] = errors
        report["latency_trace_overflow"] = trace.overflow
        report["model_ms_per_frame"] = summary.get("model_ms_per_frame")
        report["sinks"] = summary.get("outputs", {})
        return_ctx = {"t0": t0, "ended": ended, "trace": trace, "samples": samples,
                      "sends_per_frame": per_frame, "pose_fps": pose_fps}
    finally:
        threading.excepthook = previous_hook
        if speech is not None:
            speech.stop()
        receivers = {}
        for name, helper in zip(("osc_receiver", "ws_client"), helpers):
            try:
                out, _ = helper.communicate(input="", timeout=15)
                receivers[name] = out.strip().splitlines()[-1] if out.strip() else ""
            except subprocess.TimeoutExpired:
                helper.kill()  # this helper's own PID
                helper.wait(timeout=5)
                receivers[name] = "timed out"
        report["receivers"] = receivers
        mic.stop()
        report["loadavg_start"] = [round(x, 2) for x in load_start]
        report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    judge(report, return_ctx, args)
    return report


def judge(report: dict, ctx: dict, args) -> None:
    """The pass/fail goals (see the module docstring)."""
    t0, ended, trace, samples = ctx["t0"], ctx["ended"], ctx["trace"], ctx["samples"]
    warm_end = t0 + args.warmup_minutes * 60.0
    minutes = report["timeline"]
    goals = {}

    exceptions = (report["recorded_errors"]["count"] + len(report["thread_exceptions"])
                  + (1 if report["engine_exception"] else 0)
                  + sum(int(s.get("errors", 0)) for s in report["sinks"].values()
                        if isinstance(s.get("errors", 0), int)))
    goals["zero_exceptions"] = {"value": exceptions, "pass": exceptions == 0}

    # RSS: the first sample at or after the end of warm-up vs the last one.
    rss = [m["rss_mb"] for m in minutes if m["rss_mb"] is not None and t0 + m["t_s"] >= warm_end - 0.5]
    if len(rss) >= 2:
        warm_rss = rss[0]
        growth = (rss[-1] - warm_rss) / warm_rss
        goals["rss_growth_after_warmup"] = {"warm_mb": warm_rss, "end_mb": rss[-1], "peak_mb": max(rss),
                                            "growth": round(growth, 4), "limit": 0.05, "pass": growth <= 0.05}
    else:
        goals["rss_growth_after_warmup"] = {"pass": False, "why": "fewer than two RSS samples"}

    # p99 drift: first vs last ten minutes after warm-up (thirds when shorter than 30 minutes).
    measured = ended - warm_end
    span = 600.0 if measured >= 1800.0 else measured / 3.0
    first = trace.between(warm_end, warm_end + span)
    last = trace.between(ended - span, ended + 1)
    if len(first) and len(last):
        p_first, p_last = float(np.percentile(first, 99)), float(np.percentile(last, 99))
        drift = (p_last - p_first) / p_first
        goals["p99_drift"] = {"window_s": round(span, 1), "first_p99_ms": round(p_first, 3),
                              "last_p99_ms": round(p_last, 3), "drift": round(drift, 4), "limit": 0.10,
                              "pass": drift <= 0.10}
    else:
        goals["p99_drift"] = {"pass": False, "why": "no latencies in a window"}

    goals["frames_vs_expected"] = account_sends([s for s in samples if s.at >= warm_end - 1.0])
    report["capture_clock_drift_ppm"] = goals["frames_vs_expected"].get("capture_clock_drift_ppm")
    report["overall_latency_ms"] = percentiles(trace.between(warm_end, ended + 1))
    report["goals"] = goals
    report["pass"] = all(g["pass"] for g in goals.values())


def account_sends(samples: list[Sample], limit: float = 0.001) -> dict:
    """Sends written against the audio actually captured, between the first and last sample.

    The engine paces itself by captured audio, so the expectation is captured samples /
    rate x send rate, not wall time x send rate: a sound device's clock runs a few tenths
    of a percent off the system clock, and that drift is reported as its own figure.
    Every expected send is written, still in flight (audio in the ring, sends queued),
    or lost for a counted reason (a skipped model frame, an extrapolation superseded by a
    newer frame). ``sends_unaccounted`` comes from the engine's own closed sum and is 0
    unless a send vanished without a reason. Pass: nothing unaccounted and the counted
    losses within ``limit`` of the expected sends.
    """
    usable = [s for s in samples if s.accounting]
    if len(usable) < 2:
        return {"pass": False, "why": "fewer than two accounting samples after warm-up"}
    a, b = usable[0].accounting, usable[-1].accounting

    def delta(key: str) -> int:
        return b[key] - a[key]

    rate, per_frame = b["sample_rate"], b["sends_per_frame"]
    send_samples = rate / (b["pose_fps"] * per_frame)  # audio samples per send
    expected = delta("audio_samples_captured") / send_samples
    written = delta("sends_written") - delta("sends_idle_written")
    skipped = delta("pose_frames_skipped") * per_frame
    superseded = delta("sends_superseded")
    # Audio captured but not yet consumed, and sends computed but not yet due, at each end.
    in_flight = ((b["audio_samples_captured"] - b["audio_samples_consumed"])
                 - (a["audio_samples_captured"] - a["audio_samples_consumed"])) / send_samples \
        + delta("sends_pending")
    wall_s = b["at"] - a["at"]
    audio_s = delta("audio_samples_captured") / rate
    counted_losses = skipped + superseded
    unaccounted = delta("sends_unaccounted")
    return {
        "wall_s": round(wall_s, 3), "audio_captured_s": round(audio_s, 3),
        "capture_clock_drift_ppm": round((audio_s / wall_s - 1.0) * 1e6, 1) if wall_s > 0 else None,
        "expected_from_audio": round(expected, 1), "expected_from_wall_clock": round(wall_s * rate / send_samples, 1),
        "written": written, "in_flight": round(in_flight, 1),
        "lost_to_skipped_frames": skipped, "lost_to_superseded_extrapolations": superseded,
        "sends_unaccounted": unaccounted,
        # what is left once written, in-flight and counted losses are taken off (under one send: rounding)
        "residual": round(expected - written - in_flight - counted_losses, 2),
        "counted_loss_fraction": round(counted_losses / expected, 6) if expected else None,
        "limit": limit,
        "pass": unaccounted == 0 and expected > 0 and counted_losses <= limit * expected,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hop-soak", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--minutes", type=float, default=60.0, help="how long the engine runs (default 60)")
    p.add_argument("--warmup-minutes", type=float, help="excluded from RSS and drift (default min(2, minutes/5))")
    p.add_argument("--interval-s", type=float, default=60.0, help="one timeline entry per this many seconds")
    p.add_argument("--out", type=Path, required=True, help="the JSON report")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the built-in one)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="engine profile (send rate, threads, backend)")
    p.add_argument("--no-asr", action="store_true", help="without the ASR process (the goal is with it)")
    p.add_argument("--speech-dir", type=Path, default=SHARED_SPEECH, help="folder of speech WAVs")
    p.add_argument("--bvh", type=Path, help="where the BVH recording goes (default: a temp folder)")
    p.add_argument("--seed", type=int, default=0, help="silence lengths between clips")
    p.add_argument("--keep-work", action="store_true", help="keep the temp folder (pulse log, BVH)")
    p.add_argument("--quiet", action="store_true", help="no per-minute line on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0:
        print("hop-soak: --minutes must be positive", file=sys.stderr)
        return 2
    if args.warmup_minutes is None:
        args.warmup_minutes = min(2.0, args.minutes / 5.0)
    if not 0 <= args.warmup_minutes < args.minutes:
        print("hop-soak: --warmup-minutes must be within 0..--minutes", file=sys.stderr)
        return 2
    try:
        report = run_soak(args)
    except Exception as error:
        print(f"hop-soak: could not run: {error}", file=sys.stderr)
        traceback.print_exc()
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {name: goal["pass"] for name, goal in report["goals"].items()}
    print(f"hop-soak: {'PASS' if report['pass'] else 'FAIL'} {summary}; report in {args.out}", file=sys.stderr)
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
