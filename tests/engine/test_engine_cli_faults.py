"""Faults at the hop-live command line, each run as a real `hop-live` subprocess.

Bad checkpoints (missing, truncated, for another language model, offline-only, weights
that do not fit), a missing LM folder, unusable input files, a WebSocket port in use, an
unresolvable OSC host: each must end with a one-line message naming the flag and the fix
and exit status 2 (a value the user gave cannot be used), never a traceback. SIGINT/SIGTERM/SIGHUP mid-run must stop cleanly:
exit 0, the summary printed, and the BVH recording complete and valid.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hop.engine.session import DEMO_SPEECH

HOP_LIVE = Path(sys.executable).with_name("hop-live")
HAVE_BVH = importlib.util.find_spec("hop.bridges.bvh") is not None


def hop_live_cmd() -> list[str]:
    if HOP_LIVE.exists():
        return [str(HOP_LIVE)]
    return [sys.executable, "-m", "hop.engine.cli"]


def run_many(commands: dict[str, list[str]], timeout: float = 120, parallel: int = 4) -> dict[str, tuple]:
    """Run hop-live invocations a few at a time; (returncode, stdout, stderr) for each."""
    results, pending, running = {}, list(commands.items()), {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            name, args = pending.pop(0)
            running[name] = subprocess.Popen(hop_live_cmd() + args, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
        for name, process in list(running.items()):
            if process.poll() is not None:
                out, err = process.communicate()
                results[name] = (process.returncode, out, err)
                del running[name]
        if time.monotonic() > deadline:
            for process in running.values():
                process.kill()  # our own children, by PID
            raise AssertionError(f"hop-live did not finish: {sorted(running)}")
        time.sleep(0.05)
    return results


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A good inference-only checkpoint and broken variants of it."""
    from hop.model import Hop, HopConfig
    from hop.model.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    good = folder / "good.pt"
    save_checkpoint(good, Hop(HopConfig(n_prototypes=64)).eval(), inference_only=True)
    payload = torch.load(good, map_location="cpu", weights_only=True)
    data = good.read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])

    def variant(name: str, change) -> None:
        copy = json.loads(json.dumps({k: v for k, v in payload.items() if k != "model"}))
        change(copy)
        copy["model"] = payload["model"]
        torch.save(copy, folder / name)

    variant("other_lm.pt", lambda p: p["lm"].update(fingerprint="0123456789abcdef"))
    variant("lm_missing.pt", lambda p: p["config"].update(lm=str(folder / "no-such-lm-folder")))
    save_checkpoint(folder / "offline.pt", Hop(HopConfig(n_prototypes=64, causal=False)).eval(),
                    inference_only=True)  # a real paper-mode (bidirectional) model
    variant("wrong_shape.pt", lambda p: p["config"].update(gru_hidden=p["config"]["gru_hidden"] * 2))
    (folder / "not_a_checkpoint.pt").write_text("hello")
    from hop.engine.session import load_model
    assert load_model(good)[0].cfg.causal  # the variants are broken copies of a checkpoint that loads
    return folder


def test_checkpoint_and_lm_faults_exit_with_a_message_naming_the_fix(checkpoints, tmp_path):
    base = ["--input", str(DEMO_SPEECH), "--fast", "--no-asr", "--osc", "127.0.0.1:9", "--duration", "3"]
    expect = {
        "missing": (checkpoints / "absent.pt", r"--checkpoint .* does not exist; pass a checkpoint written by"),
        "truncated": (checkpoints / "truncated.pt", r"--checkpoint .*corrupt or truncated.*copy it again"),
        "not_a_checkpoint": (checkpoints / "not_a_checkpoint.pt",
                             r"--checkpoint .*is not a hop-live checkpoint.*pass a checkpoint written"),
        "other_lm": (checkpoints / "other_lm.pt", r"trained with language model.*fingerprint"),
        "lm_missing": (checkpoints / "lm_missing.pt", r"no-such-lm-folder.*does not exist"),
        "offline": (checkpoints / "offline.pt", r"offline .*needs a causal one"),
        "wrong_shape": (checkpoints / "wrong_shape.pt", r"cannot be loaded: it does not fit"),
    }
    commands = {name: base + ["--checkpoint", str(path)] for name, (path, _) in expect.items()}
    results = run_many(commands)
    import re
    for name, (_, pattern) in expect.items():
        code, _, err = results[name]
        assert code == 2, f"{name}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err, f"{name}: crashed instead of a message\n{err[-2000:]}"
        assert re.search(pattern, err), f"{name}: message does not name the fix: {err[-800:]}"
        assert "weights_only" not in err, f"{name}: never advise loading an untrusted file with weights_only=False"


def write_pcm_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(int(seconds * rate) * 2))
    return path


def test_unusable_inputs_and_outputs_exit_with_a_message_naming_the_fix(tmp_path):
    """The file faults (truncated, empty, ...) are checked in depth by test_engine_faults.py::
    test_bad_wav_files_are_refused_with_the_fix; here one of them shows the CLI's end of it."""
    good = write_pcm_wav(tmp_path / "good.wav", 1.0)
    mp3 = tmp_path / "song.wav"  # ID3 tag + MPEG-1 Layer III frame headers (no encoder here; see the README fault table)
    mp3.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + (b"\xff\xfb\x90\x64" + bytes(413)) * 10)
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    osc = ["--osc", "127.0.0.1:9", "--no-asr"]
    commands = {
        "mp3": ["--input", str(mp3), "--fast"] + osc,
        "ws_port_in_use": ["--input", str(good), "--fast", "--no-asr", "--ws", str(port)],
        "osc_unresolvable": ["--input", str(good), "--fast", "--no-asr", "--osc", "no-such-host.invalid:9000"],
    }
    try:
        results = run_many(commands)
    finally:
        busy.close()
    expect = {
        "mp3": "--input: .*cannot be decoded.*MP3.*ffmpeg -i",
        "ws_port_in_use": f"--ws 127.0.0.1:{port}: cannot listen there.*pick another port",
        "osc_unresolvable": "--osc no-such-host.invalid:9000: cannot resolve host",
    }
    import re
    for name, pattern in expect.items():
        code, _, err = results[name]
        assert code == 2, f"{name}: exit {code}\n{err[-2000:]}"
        assert "(trained on" not in err, f"{name}: found only after the model had loaded"
        assert "Traceback" not in err, f"{name}: crashed\n{err[-2000:]}"
        assert re.search(pattern, err, re.S), f"{name}: {err[-800:]}"


# -- signals during a recording -------------------------------------------------------

def check_bvh(path: Path) -> int:
    """A minimal BVH check of our own: hierarchy, channel count, every frame line complete and finite.

    Returns the number of frames."""
    text = path.read_text()
    head, sep, motion = text.partition("\nMOTION\n")
    assert sep and head.startswith("HIERARCHY"), "no HIERARCHY/MOTION sections"
    channels = sum(int(line.split()[1]) for line in head.splitlines() if line.strip().startswith("CHANNELS"))
    assert head.count("{") == head.count("}"), "unbalanced hierarchy"
    lines = motion.strip("\n").splitlines()
    assert lines[0].startswith("Frames:") and lines[1].startswith("Frame Time:")
    frames = int(lines[0].split()[1])
    assert float(lines[1].split(":")[1]) > 0
    rows = lines[2:]
    assert len(rows) == frames, f"header says {frames} frames, file has {len(rows)}"
    for row in rows:
        values = [float(v) for v in row.split()]
        assert len(values) == channels and all(math.isfinite(v) for v in values)
    return frames


def independent_bvh_frames(path: Path) -> int:
    """Frame count read by bvhio, the independent BVH parser pinned in pyproject's test extra."""
    bvhio = pytest.importorskip("bvhio")
    bvh = bvhio.readAsBvh(str(path))
    assert len(bvh.Root.Children) >= 0  # it parsed the hierarchy
    return int(bvh.FrameCount)


def test_sigint_sigterm_sighup_mid_run_exit_0_with_a_valid_recording(tmp_path):
    processes = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        name = sig.name
        args = ["--input", str(DEMO_SPEECH), "--no-asr", "--osc", "127.0.0.1:9",
                "--stats-json", str(tmp_path / f"{name}.json")]
        if HAVE_BVH:
            args += ["--bvh", str(tmp_path / f"{name}.bvh")]
        processes[sig] = subprocess.Popen(hop_live_cmd() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True)
    try:
        deadline = time.monotonic() + 90
        for sig, process in processes.items():
            stats = tmp_path / f"{sig.name}.json"
            while not (stats.exists() and json.loads(stats.read_text()).get("frames_emitted", 0) > 60):
                assert process.poll() is None, f"{sig.name}: exited early\n{process.stderr.read()[-2000:]}"
                assert time.monotonic() < deadline, "hop-live did not start streaming"
                time.sleep(0.1)
        for sig, process in processes.items():
            process.send_signal(sig)
        outcome = {sig: process.communicate(timeout=30) + (process.returncode,) for sig, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for sig, (out, err, code) in outcome.items():
        assert code == 0, f"{sig.name}: exit {code}\n{err[-2000:]}"
        assert f"{sig.name}, stopping" in err
        summary = json.loads(out)
        assert summary["frames_emitted"] > 60 and summary["seconds"] < 25, "it did not stop mid-run"
        if HAVE_BVH:
            frames = check_bvh(tmp_path / f"{sig.name}.bvh")
            assert frames >= summary["pose_frames_computed"] // 2
            assert independent_bvh_frames(tmp_path / f"{sig.name}.bvh") == frames
    if not HAVE_BVH:
        pytest.skip("hop.bridges.bvh is not in this checkout yet: clean exits checked, BVH validity not")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to give hop-live a tiny tmpfs")
def test_disk_full_while_recording_through_hop_live(tmp_path):
    """hop-live records a BVH onto a 64 KiB tmpfs (in its own mount namespace): the disk
    fills up mid-run; the error is reported and OSC streaming goes on to the end."""
    if not HAVE_BVH:
        pytest.skip("hop.bridges.bvh is not in this checkout yet")
    small = tmp_path / "small"
    small.mkdir()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    wav = write_pcm_wav(tmp_path / "silence.wav", 6.0)
    command = " ".join(hop_live_cmd() + ["--input", str(wav), "--no-asr", "--bvh", str(small / "rec.bvh"),
                                         "--osc", f"127.0.0.1:{receiver.getsockname()[1]}",
                                         "--stats-json", str(tmp_path / "stats.json")])
    mount = f"mount -t tmpfs -o size=64k tmpfs {small} && exec {command}"
    process = subprocess.Popen(["unshare", "-rm", "sh", "-c", mount], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=120)
    received = 0
    try:
        while True:  # the kernel kept what arrived (1 MiB buffer is plenty for 6 s)
            receiver.recv(65536)
            received += 1
    except TimeoutError:
        pass
    receiver.close()
    assert process.returncode == 0, err[-2000:]
    summary = json.loads(out)
    bvh = next(v for k, v in summary["outputs"].items() if k.startswith("BvhRecorder"))
    assert bvh["errors"] > 0 and "No space left on device" in bvh["last_error"]
    assert any("BvhRecorder" in e and "No space" in e for e in summary["recent_errors"]), "not in the status"
    # and in words, as a state of the output: what the status line shows while it lasts
    assert bvh["fault"] == "disk full" and bvh["fault_since"] > 0, bvh
    assert any(e.startswith("bvh: disk full since ") for e in summary["recent_errors"]), summary["recent_errors"]
    # The OSC stream went on to the end of the file: every send reached the receiver.
    assert received >= summary["frames_emitted"] * 0.98 and summary["frames_emitted"] > 6 * 60 * 0.95, \
        f"{received} OSC datagrams of {summary['frames_emitted']} sends: streaming stopped with the disk"
