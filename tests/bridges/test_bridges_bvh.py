"""BVH recorder, read back by an independent parser (PyPI bvhio) and its Euler conventions."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import warnings

import numpy as np
import pytest
from bridges_testkit import swinging_arms_pose
from scipy.spatial.transform import Rotation

from hop.bridges.bvh import BvhOptions, BvhRecorder
from hop.bridges.frame import PoseFrame, PoseSink
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

with warnings.catch_warnings():
    warnings.simplefilter("ignore", PendingDeprecationWarning)  # bvhio 1.5.4 imports glm by its old name
    import bvhio

REPO = Path(__file__).resolve().parents[2]
TESTKIT = str(Path(__file__).resolve().parent)  # bridges_testkit.py, for the recorder subprocesses
# Joints named for the bone they turn, as Blender, MotionBuilder and Mixamo name a person's.
JOINTS = ["Hips", "Spine", "Neck", "Head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "RightShoulder",
          "RightArm", "RightForeArm", "RightHand"]
NUMBERS_PER_LINE = 6 + 3 * (len(JOINTS) - 1)
# joint -> (where its bone points: a child joint or its End Site, the TED bone it must follow)
BONES = {
    "Spine": ("Neck", ("spine", "neck")),
    "Neck": ("Head", ("neck", "nose")),
    "Head": ("end", ("nose", "head_top")),
    "LeftShoulder": ("LeftArm", ("neck", "left_shoulder")),
    "LeftArm": ("LeftForeArm", ("left_shoulder", "left_elbow")),
    "LeftForeArm": ("LeftHand", ("left_elbow", "left_wrist")),
    "RightShoulder": ("RightArm", ("neck", "right_shoulder")),
    "RightArm": ("RightForeArm", ("right_shoulder", "right_elbow")),
    "RightForeArm": ("RightHand", ("right_elbow", "right_wrist")),
}
TED_TO_BVH = np.array([-1.0, -1.0, 1.0])  # TED: y down, left at -x; BVH: y up, left at +x, both face +z


def poses(n: int, fps: float = 15.0) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        pose = swinging_arms_pose(i / fps).reshape(-1, 3) + rng.normal(scale=0.15, size=(9, 3))
        out.append((pose / np.linalg.norm(pose, axis=1, keepdims=True)).reshape(-1).astype(np.float32))
    return out


def record(path: Path, dir_vecs: list[np.ndarray], options: BvhOptions = BvhOptions()) -> dict:
    recorder = BvhRecorder(path, options)
    for i, dir_vec in enumerate(dir_vecs):
        recorder.send(PoseFrame(i, i / options.fps, dir_vec, speaking=True, skeleton=options.skeleton))
    recorder.close()
    return recorder.stats()


def flatten(joint) -> list:
    out = [joint]
    for child in joint.Children:
        out += flatten(child)
    return out


def world_directions(bvh, frame: int, bones: dict = BONES) -> dict[str, np.ndarray]:
    """Forward kinematics from bvhio's parsed keyframes: each joint's bone direction in world axes.
    A bone's target is a child joint, "end" (its End Site) or a point [x, y, z] in its rest frame."""
    world: dict[str, Rotation] = {}
    directions = {}

    def walk(joint, parent: Rotation | None) -> None:
        q = joint.Keyframes[frame].Rotation  # glm quaternion, w first in its constructor
        local = Rotation.from_quat([q.x, q.y, q.z, q.w])
        world[joint.Name] = local if parent is None else parent * local
        for child in joint.Children:
            walk(child, world[joint.Name])

    walk(bvh.Root, None)
    by_name = {j.Name: j for j in flatten(bvh.Root)}
    for name, (target, _) in bones.items():
        if isinstance(target, str):
            offset = by_name[name].EndSite if target == "end" else by_name[target].Offset
            offset = [offset.x, offset.y, offset.z]
        else:
            offset = target
        vector = world[name].apply(np.array(offset))
        directions[name] = vector / np.linalg.norm(vector)
    return directions


def test_bridges_bvh_reads_back_with_bvhio(tmp_path):
    path = tmp_path / "take.bvh"
    dir_vecs = poses(45)
    stats = record(path, dir_vecs, BvhOptions(fps=30.0))
    assert stats["sent"] == 45 and stats["frames"] == 45 and stats["errors"] == 0 and stats["dropped"] == 0
    bvh = bvhio.readAsBvh(str(path))
    assert [j.Name for j in flatten(bvh.Root)] == JOINTS
    assert bvh.FrameCount == 45 and abs(bvh.FrameTime - 1 / 30) < 1e-6
    assert all(len(j.Keyframes) == 45 for j in flatten(bvh.Root))
    # The file's layout: the second parser in the venv agrees on the counts.
    text = path.read_text()
    motion = text.split("Frame Time:")[1].strip().splitlines()[1:]
    assert len(motion) == 45 and all(len(line.split()) == NUMBERS_PER_LINE for line in motion)
    assert text.startswith("HIERARCHY\nROOT Hips\n")


def test_bridges_bvh_forward_kinematics_reproduces_directions(tmp_path):
    path = tmp_path / "fk.bvh"
    dir_vecs = poses(30)
    record(path, dir_vecs)
    bvh = bvhio.readAsBvh(str(path))
    names = TED_GESTURE.joint_names
    bone_index = {(names[p], names[c]): k for k, (p, c, _) in enumerate(TED_GESTURE.bones)}
    worst = 0.0
    for frame, dir_vec in enumerate(dir_vecs):
        got = world_directions(bvh, frame)
        for joint, (_, source) in BONES.items():
            k = bone_index[source]
            want = dir_vec[3 * k:3 * k + 3] * TED_TO_BVH
            want = want / np.linalg.norm(want)
            worst = max(worst, float(np.degrees(np.arccos(np.clip(np.dot(got[joint], want), -1, 1)))))
    assert worst < 0.5, worst
    # The root stays where the rig puts it: the hips 90 cm up, the spine point at 100 cm.
    p = bvh.Root.Keyframes[0].Position
    assert (p.x, p.y, p.z) == (0.0, 90.0, 0.0)


def parents_of(bvh) -> dict[str, str | None]:
    parents = {bvh.Root.Name: None}
    for joint in flatten(bvh.Root):
        for child in joint.Children:
            parents[child.Name] = joint.Name
    return parents


def test_bridges_bvh_joints_are_named_for_the_bone_they_turn(tmp_path):
    # A DCC tool names a bone after its joint: Blender must show "Head" as the head (not "Nose"),
    # "LeftArm" as the upper arm (not "LeftShoulder") and have hands at the wrists.
    path = tmp_path / "person.bvh"
    record(path, poses(2))
    bvh = bvhio.readAsBvh(str(path))
    assert parents_of(bvh) == {
        "Hips": None, "Spine": "Hips", "Neck": "Spine", "Head": "Neck",
        "LeftShoulder": "Spine", "LeftArm": "LeftShoulder", "LeftForeArm": "LeftArm", "LeftHand": "LeftForeArm",
        "RightShoulder": "Spine", "RightArm": "RightShoulder", "RightForeArm": "RightArm", "RightHand": "RightForeArm"}
    by_name = {j.Name: j for j in flatten(bvh.Root)}
    # Each joint sits where its bone starts: the upper arm at the shoulder, 22 cm out from the neck; the
    # hand at the wrist, 36 + 33 cm further; the head at the nose. Left is +X in BVH.
    assert tuple(by_name["LeftArm"].Offset) == (22.0, 0.0, 0.0)
    assert tuple(by_name["LeftHand"].Offset) == (33.0, 0.0, 0.0) and by_name["LeftHand"].EndSite.x > 10
    assert tuple(by_name["RightHand"].Offset) == (-33.0, 0.0, 0.0) and by_name["RightHand"].EndSite.x < -10
    head = by_name["Head"]
    assert abs(np.linalg.norm(list(head.Offset)) - 18.0) < 0.01 and head.EndSite.y > 10


def expressive_bones() -> dict:
    """joint -> (target, TED Expressive bone) from the rig file, read here with tomllib."""
    rig = tomllib.loads((REPO / "profiles" / "rigs" / "bvh_ted_expressive.toml").read_text())
    return {name: (spec["to"], tuple(spec["source"])) for name, spec in rig["drives"]["ted_expressive"].items()}


def test_bridges_bvh_expressive_has_hands_and_fingers_and_follows_every_bone(tmp_path):
    path = tmp_path / "expressive.bvh"
    rng = np.random.default_rng(8)
    dir_vecs = []
    for _ in range(12):
        v = rng.normal(size=(TED_EXPRESSIVE.n_bones, 3))
        dir_vecs.append((v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1).astype(np.float32))
    stats = record(path, dir_vecs, BvhOptions(skeleton="ted_expressive"))
    assert stats["frames"] == 12 and stats["errors"] == 0
    bvh = bvhio.readAsBvh(str(path))
    parents = parents_of(bvh)
    fingers = [f"{side}Hand{finger}{k}" for side in ("Left", "Right")
               for finger in ("Thumb", "Index", "Middle", "Ring", "Pinky") for k in (1, 2, 3)]
    assert set(parents) == set(JOINTS) | set(fingers) and len(parents) == 42
    for side in ("Left", "Right"):
        assert parents[f"{side}Hand"] == f"{side}ForeArm"
        for finger in ("Thumb", "Index", "Middle", "Ring", "Pinky"):
            assert parents[f"{side}Hand{finger}1"] == f"{side}Hand"
            assert parents[f"{side}Hand{finger}3"] == f"{side}Hand{finger}2"
    motion = path.read_text().split("Frame Time:")[1].strip().splitlines()[1:]
    assert all(len(line.split()) == 6 + 3 * 41 for line in motion)
    bones = expressive_bones()
    assert len(bones) == 31  # body 3, arms 2 x 4, fingers 2 x 10
    names = TED_EXPRESSIVE.joint_names
    bone_index = {(names[p], names[c]): k for k, (p, c, _) in enumerate(TED_EXPRESSIVE.bones)}
    worst = 0.0
    for frame, dir_vec in enumerate(dir_vecs):
        got = world_directions(bvh, frame, bones)
        for joint, (_, source) in bones.items():
            k = bone_index[source]
            want = dir_vec[3 * k:3 * k + 3] * TED_TO_BVH
            want = want / np.linalg.norm(want)
            worst = max(worst, float(np.degrees(np.arccos(np.clip(np.dot(got[joint], want), -1, 1)))))
    assert worst < 0.5, worst


def test_bridges_bvh_rig_follows_the_skeleton(tmp_path):
    assert BvhRecorder(tmp_path / "g.bvh")._rig.name == "bvh_ted"
    assert BvhRecorder(tmp_path / "e.bvh", skeleton="ted_expressive")._rig.name == "bvh_ted_expressive"
    with pytest.raises(ValueError, match="no drives"):
        BvhRecorder(tmp_path / "x.bvh", rig="bvh_ted", skeleton="ted_expressive")


def test_bridges_bvh_angles_continuous(tmp_path):
    path = tmp_path / "spin.bvh"
    # The left forearm turning steadily round a full circle: no 360-degree jumps between frames.
    base = TED_GESTURE.mean_pose().reshape(-1, 3).copy()
    dir_vecs = []
    for i in range(60):
        a = 2 * np.pi * i / 40
        pose = base.copy()
        pose[5] = [np.cos(a) * 0.3 - 0.5, np.sin(a), np.cos(a)]
        pose /= np.linalg.norm(pose, axis=1, keepdims=True)
        dir_vecs.append(pose.reshape(-1).astype(np.float32))
    record(path, dir_vecs)
    motion = np.array([[float(v) for v in line.split()] for line in
                       path.read_text().split("Frame Time:")[1].strip().splitlines()[1:]])
    assert np.abs(np.diff(motion, axis=0)).max() < 90


def test_bridges_bvh_is_a_pose_sink_that_counts_bad_frames(tmp_path):
    recorder = BvhRecorder(tmp_path / "bad.bvh")
    assert isinstance(recorder, PoseSink)
    good = poses(1)[0]
    nan = good.copy()
    nan[3] = np.nan
    recorder.send(PoseFrame(0, 0.0, good, True))
    recorder.send(PoseFrame(1, 0.0, nan, True))
    recorder.send(PoseFrame(2, 0.0, np.zeros(4, np.float32), True))
    recorder.send(PoseFrame(3, 0.0, good, True, stream=1))  # another speaker: not this file
    recorder.send(PoseFrame(4, 0.0, good, True, skeleton="ted_expressive"))
    recorder.send(PoseFrame(5, 0.0, good, True))
    recorder.close()
    recorder.close()
    recorder.send(PoseFrame(6, 0.0, good, True))  # after close: ignored, never raised
    stats = recorder.stats()
    assert (stats["sent"], stats["errors"], stats["ignored"], stats["frames"]) == (2, 3, 1, 2)
    assert bvhio.readAsBvh(str(tmp_path / "bad.bvh")).FrameCount == 2


def test_bridges_bvh_unwritable_path_and_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(OSError, match="cannot record BVH to"):
        BvhRecorder(tmp_path / "no" / "such" / "folder.bvh")
    with pytest.raises(ValueError, match="space"):
        BvhRecorder(tmp_path / "x.bvh", BvhOptions(rig="unity_humanoid"))
    with pytest.raises(ValueError, match="space"):
        BvhRecorder(tmp_path / "x.bvh", rig="unity_humanoid")
    with pytest.raises(TypeError):
        BvhRecorder(tmp_path / "x.bvh", no_such_option=1)
    with pytest.raises(ValueError, match="fps"):
        BvhRecorder(tmp_path / "x.bvh", fps=0)


def test_bridges_bvh_wait_when_behind_writes_every_frame(tmp_path):
    # A one-frame queue and a burst far faster than the writer: live recording drops and counts,
    # offline conversion (wait_when_behind) blocks the sender instead and keeps every frame.
    burst = poses(200)
    live = record(tmp_path / "live.bvh", burst, BvhOptions(queue_frames=1))
    offline = record(tmp_path / "offline.bvh", burst, BvhOptions(queue_frames=1, wait_when_behind=True))
    assert live["dropped"] > 0 and live["frames"] + live["dropped"] == 200
    assert offline["dropped"] == 0 and offline["frames"] == offline["sent"] == 200
    assert bvhio.readAsBvh(str(tmp_path / "offline.bvh")).FrameCount == 200


def test_bridges_bvh_options_object_and_keywords_are_the_same(tmp_path):
    # hop-live passes BvhOptions(fps=..., skeleton=...); hop-soak passes the same as keywords.
    by_options = BvhRecorder(tmp_path / "a.bvh", BvhOptions(fps=30.0, skeleton="ted_gesture", decimals=3))
    by_keywords = BvhRecorder(tmp_path / "b.bvh", skeleton="ted_gesture", fps=30.0, decimals=3)
    overridden = BvhRecorder(tmp_path / "c.bvh", BvhOptions(fps=15.0, decimals=3), fps=30.0)
    for recorder in (by_options, by_keywords, overridden):
        for i, dir_vec in enumerate(poses(3)):
            recorder.send(PoseFrame(i, i / 30, dir_vec, speaking=True))
        recorder.close()
    assert by_options.options == by_keywords.options == overridden.options != BvhOptions()
    assert by_options.stats()["frames"] == 3
    assert (tmp_path / "a.bvh").read_bytes() == (tmp_path / "b.bvh").read_bytes() == (tmp_path / "c.bvh").read_bytes()


RECORDER_SCRIPT = textwrap.dedent("""
    import importlib.util, json, resource, signal, sys, time, types
    import numpy as np
    # hop.model's __init__ imports torch (seconds of start-up); the recorder needs only
    # hop.model.skeleton, so load the subpackage without running its __init__.
    model = types.ModuleType("hop.model")
    model.__path__ = importlib.util.find_spec("hop.model").submodule_search_locations
    sys.modules["hop.model"] = model
    from hop.bridges.bvh import BvhRecorder, BvhOptions
    from hop.bridges.frame import PoseFrame
    path, mode, limit, testkit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    sys.path.insert(0, testkit)
    from bridges_testkit import swinging_arms_pose
    if mode == "limit":
        # A file size limit stands in for a full disk: writes past it fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    assert "torch" not in sys.modules
    recorder = BvhRecorder(path, BvhOptions(fps=100.0))
    i, announced = 0, False
    while mode == "kill" or i < limit // 100:
        recorder.send(PoseFrame(i, time.perf_counter(), swinging_arms_pose(i / 100), True))
        i += 1
        if not announced and recorder.stats()["frames"] >= 50:
            print("recording", flush=True)
            announced = True
        time.sleep(0.002)
    recorder.close()
    print(json.dumps(recorder.stats()), flush=True)
""")


def test_bridges_bvh_valid_after_sigterm(tmp_path):
    # Three recorders started together (their start-up dominates), killed at different moments.
    paths = [tmp_path / f"killed{attempt}.bvh" for attempt in range(3)]
    children = [subprocess.Popen([sys.executable, "-c", RECORDER_SCRIPT, str(path), "kill", "0", TESTKIT],
                                 stdout=subprocess.PIPE, text=True, cwd=REPO) for path in paths]
    for attempt, (path, child) in enumerate(zip(paths, children)):
        assert child.stdout.readline().strip() == "recording"
        time.sleep(0.013 * attempt)
        child.send_signal(signal.SIGTERM)  # default action: the process dies at once, no cleanup
        assert child.wait(timeout=10) == -signal.SIGTERM
        bvh = bvhio.readAsBvh(str(path))
        assert len(flatten(bvh.Root)) == len(JOINTS) and abs(bvh.FrameTime - 0.01) < 1e-6
        lines = path.read_text().split("Frame Time:")[1].strip().splitlines()[1:]
        complete = [line for line in lines if len(line.split()) == NUMBERS_PER_LINE]
        assert bvh.FrameCount >= 50
        # The count never promises more than there is, and lags by at most the line being written.
        assert len(complete) - 1 <= bvh.FrameCount <= len(complete)
        assert all(len(j.Keyframes) == bvh.FrameCount for j in flatten(bvh.Root))


def test_bridges_bvh_disk_full_counted_and_file_stays_valid(tmp_path):
    path = tmp_path / "full.bvh"
    limit = 12000  # bytes: the header and a few dozen frames
    child = subprocess.run([sys.executable, "-c", RECORDER_SCRIPT, str(path), "limit", str(limit), TESTKIT],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert child.returncode == 0, child.stderr
    stats = json.loads(child.stdout.strip().splitlines()[-1])
    n = limit // 100
    assert stats["errors"] > 0 and stats["dropped"] > 0 and stats["sent"] + stats["dropped"] == n
    assert "too large" in stats["last_error"].lower()
    assert path.stat().st_size <= limit
    bvh = bvhio.readAsBvh(str(path))
    assert bvh.FrameCount == stats["frames"] == stats["sent"] > 10
    lines = path.read_text().split("Frame Time:")[1].strip().splitlines()[1:]
    assert len(lines) == bvh.FrameCount and all(len(line.split()) == NUMBERS_PER_LINE for line in lines)


BLENDER = shutil.which("blender")
BLENDER_SCRIPT = textwrap.dedent("""
    import builtins, json, sys
    _open = builtins.open  # Debian's Blender 3.4 on Python 3.11: its BVH importer still opens with "rU"
    builtins.open = lambda f, mode="r", *a, **k: _open(f, mode.replace("U", ""), *a, **k)
    import bpy
    source, frames, target = sys.argv[sys.argv.index("--") + 1:]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_anim.bvh(filepath=source)
    armature = next(o for o in bpy.context.scene.objects if o.type == "ARMATURE")
    out = {"parents": {b.name: b.parent.name if b.parent else None for b in armature.data.bones}, "frames": []}
    for frame in range(1, int(frames) + 1):
        bpy.context.scene.frame_set(frame)
        out["frames"].append({b.name: [list(armature.matrix_world @ b.head), list(armature.matrix_world @ b.tail)]
                              for b in armature.pose.bones})
    json.dump(out, open(target, "w"))
""")


@pytest.mark.skipif(BLENDER is None, reason="no Blender on this machine (Debian package 'blender')")
@pytest.mark.parametrize("skeleton", ["ted_gesture", "ted_expressive"])
def test_bridges_bvh_blender_reads_a_person(tmp_path, skeleton):
    """Blender's own BVH importer: the bone names and parents, and each posed bone (head to tail, in
    Blender's Z-up axes) along its source direction wherever Blender's bone ends at the joint it aims at."""
    source = TED_GESTURE if skeleton == "ted_gesture" else TED_EXPRESSIVE
    rng = np.random.default_rng(9)
    if skeleton == "ted_gesture":
        dir_vecs = poses(8)
    else:
        dir_vecs = [v.reshape(-1).astype(np.float32) for v in
                    (lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True))(rng.normal(size=(8, source.n_bones, 3)))]
    path = tmp_path / "take.bvh"
    record(path, dir_vecs, BvhOptions(skeleton=skeleton))
    script = tmp_path / "read.py"
    script.write_text(BLENDER_SCRIPT)
    dump = tmp_path / "blender.json"
    run = subprocess.run([BLENDER, "--background", "--factory-startup", "--python", str(script), "--", str(path),
                          str(len(dir_vecs)), str(dump)], capture_output=True, text=True, timeout=180)
    assert dump.is_file(), run.stdout[-2000:] + run.stderr[-2000:]
    seen = json.loads(dump.read_text())
    bvh = bvhio.readAsBvh(str(path))
    assert seen["parents"] == parents_of(bvh)
    assert seen["parents"]["Head"] == "Neck" and seen["parents"]["LeftArm"] == "LeftShoulder"
    # Blender ends a bone at its only child, or at its End Site: those bones must follow their source bone.
    bones = BONES if skeleton == "ted_gesture" else expressive_bones()
    children = {}
    for name, parent in seen["parents"].items():
        children.setdefault(parent, []).append(name)
    names = source.joint_names
    bone_index = {(names[p], names[c]): k for k, (p, c, _) in enumerate(source.bones)}
    checked, worst = set(), 0.0
    for frame, dir_vec in enumerate(dir_vecs):
        for joint, (target, bone) in bones.items():
            if not (target == "end" or children.get(joint) == [target]):
                continue
            head, tail = (np.array(p) for p in seen["frames"][frame][joint])
            tx, ty, tz = dir_vec[3 * bone_index[bone]:3 * bone_index[bone] + 3]
            want = np.array([-tx, -tz, -ty])  # TED (right, down, forward) -> Blender (left +X, back +Y, up +Z)
            got = tail - head
            cos = np.dot(got, want) / np.linalg.norm(got) / np.linalg.norm(want)
            worst = max(worst, float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
            checked.add(joint)
    assert len(checked) == (8 if skeleton == "ted_gesture" else 27), sorted(checked)
    assert worst < 0.5, worst
