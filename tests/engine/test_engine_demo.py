"""The README's main job: `hop-live --demo` on the built-in speech sample writes its BVH, GIF
and latency plot; `--demo --mic default` keeps the demo outputs and listens to the microphone."""

import subprocess
import sys
from pathlib import Path

import bvhio
from PIL import Image

from hop.engine.cli import DEMO_SPEECH, build_parser, options_from_args

HOP_LIVE = Path(sys.executable).with_name("hop-live")


def test_demo_writes_a_readable_bvh_a_gif_and_a_latency_plot(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([str(HOP_LIVE), "--demo", "--fast", "--no-asr", "--ws", "0", "--osc", "127.0.0.1:9",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    bvh = bvhio.readAsHierarchy(str(out / "demo.bvh"))
    assert len(bvh.layout()) > 5
    header = (out / "demo.bvh").read_text().split("MOTION\n", 1)[1].splitlines()
    frames = int(header[0].split()[1])
    assert frames > 25 * 30, "the 28 s sample should give at least 25 s of frames"
    with Image.open(out / "demo_skeleton.gif") as gif:
        assert gif.n_frames > 100
    assert not (out / "demo_latency.png").exists(), "an offline conversion has no capture clock to plot"
    assert '"frames_emitted"' in done.stdout
    # In real time (a few seconds of it) the latency plot is written too.
    live = tmp_path / "live"
    done = subprocess.run([str(HOP_LIVE), "--demo", "--no-asr", "--ws", "0", "--osc", "127.0.0.1:9", "--duration", "4",
                           "--out", str(live)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(live / "demo_latency.png") as plot:
        assert plot.size[0] > 300


def test_demo_with_a_microphone_keeps_the_demo_outputs():
    options = options_from_args(build_parser().parse_args(["--demo", "--mic", "default"]))
    assert options.mic == "default" and options.input is None and not options.fast
    assert {o.kind for o in options.outputs} == {"osc", "ws", "bvh"} and options.report_dir is not None
    plain = options_from_args(build_parser().parse_args(["--demo"]))
    assert plain.input == DEMO_SPEECH and plain.mic is None
