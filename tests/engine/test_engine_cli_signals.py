"""hop-live's process lifecycle, as a terminal user meets it, each run as a real `hop-live`.

- Ctrl-C reaches the whole process group (hop-live and its ASR worker): one stops cleanly
  (exit 0, summary, BVH complete, and audio captured before the stop is in the BVH); two in
  a row skip the rest of the drain but still close the outputs and print the summary (exit
  130); no process prints a traceback.
- SIGKILL of hop-live leaves no child process behind (the ASR worker and multiprocessing's
  helper exit within 2 s).
- A target nobody listens on is one fault state in the status ("no receiver at ... since
  ..."), not an error per frame.

The three runs start together (module fixture) so the test costs one model load of wall time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hop.engine.session import DEMO_SPEECH
from test_engine_cli_faults import check_bvh, hop_live_cmd, independent_bvh_frames

SR = 16_000
TOKEN = "tok-never-printed-0123456789"
START_TIMEOUT_S = 150  # a loaded 2-core machine: interpreter, torch, model and (for two runs) whisper


class Run:
    """A hop-live in its own session (process group), its stderr read as it comes."""

    def __init__(self, name: str, args: list[str], folder: Path, env: dict | None = None):
        self.name = name
        self.stats = folder / f"{name}.json"
        self.bvh = folder / f"{name}.bvh"
        command = hop_live_cmd() + args + ["--bvh", str(self.bvh), "--stats-json", str(self.stats)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True, env={**os.environ, **(env or {})})
        self.err_lines: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.err_lines.append(line)

    @property
    def err(self) -> str:
        return "".join(self.err_lines)

    def figures(self) -> dict:
        try:
            return json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return {}

    def wait_for(self, condition, what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"{self.name}: exited early ({self.process.returncode})\n{self.err[-3000:]}"
            assert time.monotonic() < deadline, f"{self.name}: timed out waiting for {what}\n{self.err[-3000:]}"
            time.sleep(0.05)

    def streaming(self, frames: int = 90) -> bool:
        return self.figures().get("frames_emitted", 0) > frames

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            self.process.wait(timeout)  # the summary is a few kB: the pipe holds it
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name}: did not exit\n{self.err[-3000:]}")
        out = self.process.stdout.read()
        self._reader.join(5)
        return self.process.returncode, out, self.err

    def kill(self) -> None:
        """SIGKILL to the run's process group (this test's own session): hop-live and any child left."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, waiting to be reaped by init) is not alive."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signals")
    demo = ["--input", str(DEMO_SPEECH)]
    started = {
        # nobody listens on UDP port 9 (discard): the OSC target refuses every datagram; the
        # WebSocket token comes from the environment and is never printed
        "once": Run("once", demo + ["--no-asr", "--osc", "127.0.0.1:9", "--ws", "0"], folder,
                    env={"HOP_LIVE_WS_TOKEN": TOKEN}),
        "twice": Run("twice", demo + ["--loop"], folder),  # with the ASR worker: it shares the process group
        "killed": Run("killed", demo + ["--loop"], folder),
    }
    yield started
    for run in started.values():
        run.kill()


def test_one_sigint_to_the_process_group_stops_cleanly_and_drains_captured_audio(runs):
    run = runs["once"]
    run.wait_for(run.streaming, "streaming")
    os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code, out, err = run.finish()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "SIGINT, stopping" in err
    assert "viewer at http://127.0.0.1:" in err and TOKEN not in err and TOKEN not in out, "the token was printed"
    summary = json.loads(out)
    frames = check_bvh(run.bvh)
    assert independent_bvh_frames(run.bvh) == frames
    # Every complete frame of the audio captured before the stop went through the model, and
    # every send it owed is in the recording (frames skipped under load at start-up are counted).
    account = summary["accounting"]
    per_frame = account["sample_rate"] / account["pose_fps"]
    assert account["audio_samples_captured"] - account["audio_samples_consumed"] < per_frame, account
    assert account["sends_unaccounted"] == 0 and account["sends_pending"] == 0, account
    assert frames == account["sends_written"] == summary["frames_emitted"], (frames, account)
    # The refusing OSC target is one fault state with a counter, said once in the errors.
    osc = next(v for k, v in summary["outputs"].items() if k.startswith("OscSink"))
    assert osc["fault"] == "no receiver at 127.0.0.1:9" and osc["refused"] > 30 and osc["errors"] == 0, osc
    said = [e for e in summary["recent_errors"] if "no receiver" in e]
    assert len(said) == 1 and said[0].startswith("osc: no receiver at 127.0.0.1:9 since "), summary["recent_errors"]


def test_two_sigints_skip_the_drain_close_the_outputs_and_exit_130(runs):
    run = runs["twice"]
    run.wait_for(run.streaming, "streaming")
    workers = descendants(run.process.pid)
    assert workers, "no ASR worker was started"
    os.killpg(run.process.pid, signal.SIGINT)
    run.wait_for(lambda: "SIGINT, stopping" in run.err, "the first SIGINT to be taken", timeout=20)
    os.killpg(run.process.pid, signal.SIGINT)
    code, out, err = run.finish()
    assert "SIGINT again" in err, f"the second SIGINT came after the shutdown: {err[-2000:]}"
    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    summary = json.loads(out)  # the summary is still printed, whole
    assert summary["frames_emitted"] > 90
    frames = check_bvh(run.bvh)  # and the recording is closed and valid
    assert frames > 0 and independent_bvh_frames(run.bvh) == frames
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "the ASR worker outlived hop-live"


def test_sigkill_of_hop_live_leaves_no_child_process(runs):
    run = runs["killed"]
    run.wait_for(lambda: run.streaming(30) and run.figures().get("asr", {}).get("state") == "running",
                 "streaming with the ASR worker running")
    children = descendants(run.process.pid)
    assert children, "hop-live has no child process to check"
    os.kill(run.process.pid, signal.SIGKILL)
    run.process.wait(10)
    time.sleep(2.0)
    left = sorted(pid for pid in children if alive(pid))
    assert not left, f"still alive 2 s after hop-live was killed: {left}"
    frames = check_bvh(run.bvh)  # killed mid-run, the recording is still a valid file
    assert frames > 0
