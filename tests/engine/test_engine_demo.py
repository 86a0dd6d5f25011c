"""The README's main job: `hop-live --demo` on the built-in speech sample writes its BVH, GIF
and latency plot; `--demo --mic default` keeps the demo outputs and listens to the microphone."""

import subprocess
import sys
from pathlib import Path

import bvhio
import numpy as np
from PIL import Image

from hop.engine.cli import DEMO_SPEECH, build_parser, options_from_args
from hop.engine.report import write_skeleton_gif
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

HOP_LIVE = Path(sys.executable).with_name("hop-live")


def test_demo_writes_a_readable_bvh_a_gif_and_a_latency_plot(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([str(HOP_LIVE), "--demo", "--fast", "--no-asr", "--ws", "0", "--osc", "127.0.0.1:9",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    bvh = bvhio.readAsHierarchy(str(out / "demo.bvh"))
    names = {joint.Name for joint, _, _ in bvh.layout()}
    assert {"LeftHand", "RightHand", "LeftHandIndex1", "RightHandThumb3"} <= names, \
        "the default checkpoint drives the expressive skeleton: wrists and fingers"
    header = (out / "demo.bvh").read_text().split("MOTION\n", 1)[1].splitlines()
    frames = int(header[0].split()[1])
    assert frames > 25 * 30, "the 28 s sample should give at least 25 s of frames"
    with Image.open(out / "demo_skeleton.gif") as gif:
        assert gif.n_frames > 100
        hands = hand_panels(gif)
    assert hands.min() < 128, "the hand panels draw the hands"
    assert np.abs(np.diff(hands, axis=0)).max() > 0, "the hands move"
    assert not (out / "demo_latency.png").exists(), "an offline conversion has no capture clock to plot"
    assert '"frames_emitted"' in done.stdout
    # In real time (a few seconds of it) the latency plot is written too.
    live = tmp_path / "live"
    done = subprocess.run([str(HOP_LIVE), "--demo", "--no-asr", "--ws", "0", "--osc", "127.0.0.1:9", "--duration", "4",
                           "--out", str(live)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(live / "demo_latency.png") as plot:
        assert plot.size[0] > 300


def hand_panels(gif: Image.Image, frames: int = 60) -> np.ndarray:
    """Grey levels of the GIF's right third (the two magnified hands), for the first frames."""
    width, height = gif.size
    panels = []
    for k in range(min(frames, gif.n_frames)):
        gif.seek(k)
        panels.append(np.asarray(gif.convert("L").crop((2 * width // 3, 0, width, height)), dtype=np.int16))
    return np.stack(panels)


def test_skeleton_gif_magnifies_the_hands_only_of_a_rig_with_fingers(tmp_path):
    rng = np.random.default_rng(0)
    for skeleton, wide in ((TED_EXPRESSIVE, True), (TED_GESTURE, False)):
        bones = rng.standard_normal((1, skeleton.n_bones, 3)) + 0.1 * rng.standard_normal((30, skeleton.n_bones, 3))
        poses = (bones / np.linalg.norm(bones, axis=-1, keepdims=True)).reshape(30, -1)  # unit bone directions
        frames = [(k / 15, poses[k], k > 10) for k in range(30)]
        path = write_skeleton_gif(tmp_path / f"{skeleton.name}.gif", frames, skeleton.name, 15.0, 10.0)
        with Image.open(path) as gif:
            assert (gif.size[0] > gif.size[1]) == wide, gif.size
            if wide:
                hands = hand_panels(gif)
                assert hands.min() < 128 and np.abs(np.diff(hands, axis=0)).max() > 0


def test_demo_with_a_microphone_keeps_the_demo_outputs():
    options = options_from_args(build_parser().parse_args(["--demo", "--mic", "default"]))
    assert options.mic == "default" and options.input is None and not options.fast
    assert {o.kind for o in options.outputs} == {"osc", "ws", "bvh"} and options.report_dir is not None
    plain = options_from_args(build_parser().parse_args(["--demo"]))
    assert plain.input == DEMO_SPEECH and plain.mic is None
