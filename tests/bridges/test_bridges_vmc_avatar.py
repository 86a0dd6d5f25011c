"""VMC that fits the user's avatar (issue 16, item 2).

A receiver in another process (osc_decoder.py, not python-osc) reads what
VmcSink sends for a synthetic VRM 0.8 times the generic rig's size and checks
that every /VMC/Ext/Bone/Pos position is that avatar's own local offset, that
/VMC/Ext/T steps by the send period, that the mouth opens in frames whose
expressions say so and is closed in silence, and that no datagram exceeds 1,472
bytes when the frame is split for a network MTU.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from avatar_testkit import RIG, glb_json, make_avatar
from bridges_testkit import OscReceiverProcess, perturbed, swinging_arms_pose
from osc_decoder import decode_packet
from scipy.spatial.transform import Rotation

from hop.bridges.avatar import AvatarError, load_avatar
from hop.bridges.frame import PoseFrame
from hop.bridges.retarget import load_rig
from hop.bridges.vmc import (MTU_SAFE_DATAGRAM, VmcBundleEncoder, VmcOptions, VmcSink, default_datagram_limit,
                             rig_bones)
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

REPO = Path(__file__).resolve().parents[2]
MOUTH = ("A", "I", "U", "E", "O")
FPS = 30.0


@pytest.fixture(scope="module")
def receiver():
    process = OscReceiverProcess()
    yield process
    process.close()


def speech_expressions(i: int) -> dict[str, float]:
    """A mouth that opens and changes shape, as lip sync from speech would."""
    shapes = ("aa", "oh", "ih", "ou", "ee")
    main = shapes[i % len(shapes)]
    return {"aa": 0.0, "ih": 0.0, "ou": 0.0, "ee": 0.0, "oh": 0.0, "blink": 0.0, main: 0.45 + 0.4 * ((i * 7) % 5) / 4}


SILENCE = {"aa": 0.0, "ih": 0.0, "ou": 0.0, "ee": 0.0, "oh": 0.0, "blink": 0.0}


def frames_of(lines: list[dict]) -> list[list[dict]]:
    """Datagrams -> frames: a frame starts with /VMC/Ext/Root/Pos and may span several bundles."""
    frames: list[list[dict]] = []
    for line in lines:
        assert "error" not in line, line
        packet = line["packet"]
        assert packet.get("bundle") and packet["timetag"] == 1
        if packet["elements"][0]["address"] == "/VMC/Ext/Root/Pos":
            frames.append([])
        frames[-1].extend(packet["elements"])
    return frames


@pytest.mark.parametrize("version,shape", [(1, {}), (0, {"drop": ("UpperChest", "Jaw"), "between": ("Chest", "Neck")})],
                         ids=["vrm1", "vrm0-missing-bones-extra-node"])
def test_bridges_vmc_avatar_offsets_time_mouth_and_datagrams_in_another_process(receiver, tmp_path, version, shape):
    path = tmp_path / "small.vrm"
    expected = make_avatar(path, version=version, scale=0.8, **shape)
    sink = VmcSink("127.0.0.1", receiver.port,
                   VmcOptions(avatar=path, send_rate=FPS, max_datagram_bytes=MTU_SAFE_DATAGRAM))
    speaking = [True] * 30 + [False] * 30
    for i, talk in enumerate(speaking):
        # Two sends per model frame share a capture time (the live engine's interpolated sends).
        sink.send(PoseFrame(i, 500.0 + (i // 2) / 15, swinging_arms_pose(i / FPS), speaking=talk,
                            expressions=speech_expressions(i) if talk else dict(SILENCE)))
    stats = sink.stats()
    lines = receiver.collect(stats["datagrams"])
    sink.close()
    assert stats["sent"] == len(speaking) and stats["errors"] == 0 and stats["dropped"] == 0
    assert len(lines) == stats["datagrams"] > len(speaking), "a 1,472-byte limit must split the frames"
    assert max(line["size"] for line in lines) <= MTU_SAFE_DATAGRAM

    frames = frames_of(lines)
    assert len(frames) == len(speaking)
    times = []
    for frame, talk in zip(frames, speaking):
        addresses = [m["address"] for m in frame]
        positions = {m["args"][0]: np.array(m["args"][1:4]) for m in frame if m["address"] == "/VMC/Ext/Bone/Pos"}
        # Every humanoid bone of THIS avatar, each at the avatar's own local offset (0.8 x the generic rig).
        assert set(positions) == set(expected)
        for name, position in positions.items():
            np.testing.assert_allclose(position, expected[name], atol=2e-7, err_msg=name)
        root = next(m for m in frame if m["address"] == "/VMC/Ext/Root/Pos")
        assert root["args"] == ["root", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        blend = {m["args"][0]: m["args"][1] for m in frame if m["address"] == "/VMC/Ext/Blend/Val"}
        assert set(blend) == {*MOUTH, "Blink"}
        if talk:
            assert max(blend[name] for name in MOUTH) > 0.3
        else:
            assert max(blend[name] for name in MOUTH) < 0.05
        # Apply after the last value, then OK (protocol V2.5) and T, the frame's last message.
        assert addresses.index("/VMC/Ext/Blend/Apply") > max(i for i, a in enumerate(addresses) if a == "/VMC/Ext/Blend/Val")
        assert addresses[-2:] == ["/VMC/Ext/OK", "/VMC/Ext/T"] and frame[-2]["args"] == [1, 3, 0]
        times.append(frame[-1]["args"][0])
    np.testing.assert_allclose(np.diff(times), 1 / FPS, atol=1e-5)  # the send period, not the capture clock's 1/15
    assert times[0] == 0.0


def test_bridges_vmc_without_avatar_sends_the_rigs_offsets(receiver, tmp_path):
    """Without an avatar the positions are a rig's rest offsets: unity_humanoid's (a ~1.6 m figure),
    or those of a rig file the user gives. They cannot be any avatar's own: a receiver that applies
    positions (EVMC4U's BonePositionSynchronize) reshapes an avatar of other proportions to them."""
    scaled = tomllib.loads((REPO / "profiles" / "rigs" / "unity_humanoid.toml").read_text())
    for bone in scaled["bones"]:
        bone["offset"] = [0.8 * v for v in bone["offset"]]
    rig_path = tmp_path / "small_rig.toml"
    rig_path.write_text(_toml(scaled))
    for rig_name, factor in (("unity_humanoid", 1.0), (str(rig_path), 0.8)):
        sink = VmcSink("127.0.0.1", receiver.port, VmcOptions(rig=rig_name, send_rate=FPS))
        sink.send(PoseFrame(0, 1.0, TED_GESTURE.mean_pose(), speaking=False))
        (frame,) = frames_of(receiver.collect(1))
        sink.close()
        positions = {m["args"][0]: np.array(m["args"][1:4]) for m in frame if m["address"] == "/VMC/Ext/Bone/Pos"}
        assert set(positions) == set(RIG.bone_names)
        for bone in RIG.bones:
            np.testing.assert_allclose(positions[bone.name], factor * bone.offset, atol=2e-7)
        # No expressions in the frame: no Blend/Val, still one Apply.
        assert [m["address"] for m in frame].count("/VMC/Ext/Blend/Apply") == 1
        assert not [m for m in frame if m["address"] == "/VMC/Ext/Blend/Val"]
    # And with an avatar 0.8 times the size, what the rig would send is 25% off at the hips.
    avatar = tmp_path / "small.vrm"
    make_avatar(avatar, version=1, scale=0.8)
    hips = load_avatar(avatar).bone("Hips").local_position
    assert abs(RIG.bones[0].offset[1] - hips[1]) > 0.18  # the 19 cm lift the issue saw


def _toml(data: dict) -> str:
    lines = [f'name = "{data["name"]}"', f'space = "{data["space"]}"', "bones = ["]
    for bone in data["bones"]:
        lines.append(f'  {{ name = "{bone["name"]}", parent = "{bone["parent"]}", offset = {bone["offset"]} }},')
    lines.append("]")
    for skeleton, table in data["drives"].items():
        lines.append(f"[drives.{skeleton}]")
        for name, spec in table.items():
            fields = ", ".join(f"{key} = {value!r}".replace("'", '"') for key, value in spec.items())
            lines.append(f"{name} = {{ {fields} }}")
    return "\n".join(lines) + "\n"


def world_positions_over_nodes(gltf: dict, version: int, sent: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Forward kinematics over the avatar file's whole node tree in Unity axes: humanoid nodes take
    the received local position and rotation, other nodes keep their rest transform."""
    mirror = np.array([-1.0, 1.0, 1.0]) if version == 1 else np.array([1.0, 1.0, -1.0])
    nodes = gltf["nodes"]
    humanoid = {}
    extension = gltf["extensions"]
    if version == 1:
        from avatar_testkit import vrm_bone_name
        by_vrm = {vrm_bone_name(b.name, 1): b.name for b in RIG.bones}
        humanoid = {entry["node"]: by_vrm[name] for name, entry in extension["VRMC_vrm"]["humanoid"]["humanBones"].items()}
    else:
        humanoid = {entry["node"]: entry["bone"][0].upper() + entry["bone"][1:]
                    for entry in extension["VRM"]["humanoid"]["humanBones"]}
    world = {}

    def walk(index: int, position: np.ndarray, rotation: Rotation) -> None:
        node = nodes[index]
        if index in humanoid:
            local_position, local_quat = sent[humanoid[index]]
            local = Rotation.from_quat(local_quat)
        else:
            local_position = np.array(node.get("translation", [0.0, 0.0, 0.0])) * mirror
            q = np.array(node.get("rotation", [0.0, 0.0, 0.0, 1.0]))
            # A mirror of one axis turns a rotation's vector part by minus the mirror.
            local = Rotation.from_quat(np.concatenate([-mirror * q[:3], q[3:]]))
        here = position + rotation.apply(local_position)
        world_rotation = rotation * local
        if index in humanoid:
            world[humanoid[index]] = here
        for child in node.get("children", []):
            walk(child, here, world_rotation)

    walk(0, np.zeros(3), Rotation.identity())
    return world


@pytest.mark.parametrize("skeleton", ["ted_gesture", "ted_expressive"])
def test_bridges_vmc_avatar_with_rest_rotations_poses_like_the_source(tmp_path, skeleton):
    # VRM 1.0 allows bones that do not rest at identity, and real files have non-humanoid nodes
    # between humanoid ones: the local rotations sent must still put every driven bone along
    # its source direction when the receiver composes them over the avatar's own node tree.
    path = tmp_path / "twisted.vrm"
    make_avatar(path, version=1, scale=0.8, between=("Spine", "Chest"), rest_rotations=True, seed=3)
    avatar = load_avatar(path)
    assert not avatar.normalized
    gltf = glb_json(path)
    sink = VmcSink("127.0.0.1", 9, VmcOptions(avatar=path, send_rate=FPS))  # encode only: nothing is sent
    rig = avatar.rig()
    rng = np.random.default_rng(4)
    source_skeleton = TED_GESTURE if skeleton == "ted_gesture" else TED_EXPRESSIVE
    names = source_skeleton.joint_names
    bone_of = {(names[p], names[c]): k for k, (p, c, _) in enumerate(source_skeleton.bones)}
    base = TED_GESTURE.mean_pose() if skeleton == "ted_gesture" else None
    worst = 0.0
    for i in range(8):
        if base is not None:
            pose = perturbed(base, rng, 0.3)
        else:
            v = rng.normal(size=(source_skeleton.n_bones, 3))
            pose = (v / np.linalg.norm(v, axis=1, keepdims=True)).reshape(-1).astype(np.float32)
        (packet,) = sink.encode(PoseFrame(i, float(i), pose, speaking=True, skeleton=skeleton))
        messages = decode_packet(packet)["elements"]
        sent = {m["args"][0]: (np.array(m["args"][1:4]), np.array(m["args"][4:8]))
                for m in messages if m["address"] == "/VMC/Ext/Bone/Pos"}
        world = world_positions_over_nodes(gltf, 1, sent)
        ted = pose.reshape(-1, 3)
        for drive in rig.drives_for(skeleton):
            bone = rig.bones[drive.bone].name
            spec_to = _drive_to(skeleton, bone, set(avatar.bone_names))
            if spec_to is None:
                continue
            got = world[spec_to] - world[bone]
            want = ted[drive.source] * [1.0, -1.0, 1.0]  # TED -> Unity: up is -y in TED
            cos = np.dot(got, want) / np.linalg.norm(got) / np.linalg.norm(want)
            worst = max(worst, float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    sink.close()
    assert worst < 0.05, worst


def _drive_to(skeleton: str, bone: str, present: set[str]) -> str | None:
    """The bone a drive aims at when that is a named bone (drives aimed at a point are skipped)."""
    table = tomllib.loads((REPO / "profiles" / "rigs" / "unity_humanoid.toml").read_text())["drives"][skeleton]
    to = table[bone].get("to")
    return to if isinstance(to, str) and to in present and "from" not in table[bone] else None


def test_bridges_vmc_frame_split_fits_every_limit_and_keeps_every_message():
    rig = load_rig("unity_humanoid")
    bones = rig_bones(rig, list(range(len(rig.bones))))
    blend = ("A", "I", "U", "E", "O", "Blink", "Joy")
    whole = VmcBundleEncoder(bones, blend)
    deltas = np.tile([0.0, 0.0, 0.0, 1.0], (len(rig.bones), 1))
    deltas[5] = Rotation.from_rotvec([0.3, 0.2, 0.1]).as_quat()
    values = np.linspace(0.0, 1.0, len(blend))
    (single,) = whole.encode(deltas, 1.25, values)
    reference = decode_packet(single)["elements"]
    assert len(single) > 4000  # 55 bones: the 4,620-byte datagram the issue measured, and more with blend shapes
    for limit in (512, 1000, MTU_SAFE_DATAGRAM, 3000):
        packets = VmcBundleEncoder(bones, blend, limit).encode(deltas, 1.25, values)
        assert all(len(p) <= limit for p in packets), (limit, [len(p) for p in packets])
        assert len(packets) >= len(single) // limit + 1
        messages = [m for p in packets for m in decode_packet(p)["elements"]]
        assert messages == reference  # the same messages, in the same order
        last = decode_packet(packets[-1])["elements"]
        assert [m["address"] for m in last][-3:] == ["/VMC/Ext/Blend/Apply", "/VMC/Ext/OK", "/VMC/Ext/T"]
    with pytest.raises(ValueError, match="max_datagram_bytes"):
        VmcSink("127.0.0.1", 9, VmcOptions(max_datagram_bytes=100))


def test_bridges_vmc_datagram_limit_follows_the_target(tmp_path):
    # Loopback never meets a real MTU: one datagram per frame. Any other target: 1,472 bytes.
    # (The non-loopback sink only encodes here: a connected UDP socket sends nothing by itself.)
    frame = PoseFrame(0, 0.0, TED_GESTURE.mean_pose(), speaking=True, expressions=speech_expressions(0))
    local = VmcSink("127.0.0.1", 9)
    remote = VmcSink("198.51.100.7", 39539)  # TEST-NET-2, the documentation range
    try:
        assert local.loopback and local.max_datagram_bytes > 60000 and len(local.encode(frame)) == 1
        assert not remote.loopback and remote.max_datagram_bytes == MTU_SAFE_DATAGRAM
        packets = remote.encode(frame)
        assert len(packets) >= 4 and max(map(len, packets)) <= MTU_SAFE_DATAGRAM
        assert VmcSink("198.51.100.7", 39539, VmcOptions(max_datagram_bytes=9000)).max_datagram_bytes == 9000
        assert default_datagram_limit("2001:db8::7", 39539) == 1452  # IPv6 documentation range: a 40-byte header
        assert default_datagram_limit("::1", 39539) == default_datagram_limit("localhost", 39539) > 60000
    finally:
        local.close()
        remote.close()


def test_bridges_vmc_blend_names_and_constant_shapes():
    frame = PoseFrame(0, 0.0, TED_GESTURE.mean_pose(), speaking=True,
                      expressions={"aa": 0.7, "blink": 1.4, "happy": 0.5, "myCustom": 0.2})
    vrm0 = VmcSink("127.0.0.1", 9, VmcOptions(blend_shapes=(("Joy", 0.1), ("Fun", 0.3))))
    vrm1 = VmcSink("127.0.0.1", 9, VmcOptions(blend_names="vrm1"))
    try:
        blend0 = {m["args"][0]: round(m["args"][1], 6) for m in decode_packet(vrm0.encode(frame)[0])["elements"]
                  if m["address"] == "/VMC/Ext/Blend/Val"}
        # The frame's own value wins over the constant one; values are clipped to 0..1.
        assert blend0 == {"Joy": 0.5, "Fun": 0.3, "A": 0.7, "I": 0.0, "U": 0.0, "E": 0.0, "O": 0.0, "Blink": 1.0,
                          "myCustom": 0.2}
        blend1 = {m["args"][0]: round(m["args"][1], 6) for m in decode_packet(vrm1.encode(frame)[0])["elements"]
                  if m["address"] == "/VMC/Ext/Blend/Val"}
        assert blend1 == {"aa": 0.7, "ih": 0.0, "ou": 0.0, "ee": 0.0, "oh": 0.0, "blink": 1.0, "happy": 0.5,
                          "myCustom": 0.2}
        with pytest.raises(ValueError, match="blend_names"):
            VmcSink("127.0.0.1", 9, VmcOptions(blend_names="arkit"))
    finally:
        vrm0.close()
        vrm1.close()


def test_bridges_vmc_time_is_the_send_clock():
    # Without a send rate, T is the sender's monotonic clock since the first frame.
    sink = VmcSink("127.0.0.1", 9)
    times = []
    for i in range(3):
        (packet,) = sink.encode(PoseFrame(i, 7.0, TED_GESTURE.mean_pose(), speaking=False))
        times.append(decode_packet(packet)["elements"][-1]["args"][0])
        if i < 2:
            import time
            time.sleep(0.05)
    sink.close()
    assert times[0] == 0.0 and 0.04 < times[1] < 0.5 and times[2] > times[1]


def test_bridges_avatar_files_that_cannot_be_used_say_why_in_one_line(tmp_path):
    not_gltf = tmp_path / "photo.vrm"
    not_gltf.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    truncated = tmp_path / "cut.vrm"
    make_avatar(truncated, version=1)
    truncated.write_bytes(truncated.read_bytes()[:40])
    no_humanoid = tmp_path / "prop.glb"
    import pygltflib
    pygltflib.GLTF2(scene=0, scenes=[pygltflib.Scene(nodes=[0])], nodes=[pygltflib.Node(name="Cube")]).save_binary(
        str(no_humanoid))
    cases = [(tmp_path / "missing.vrm", "not found"), (tmp_path, "is a directory"), ("", "empty path"),
             (not_gltf, "not a readable glTF"),
             (truncated, "not a readable glTF"), (no_humanoid, "lacks Hips, Spine, Head")]
    for path, message in cases:
        with pytest.raises(AvatarError, match=message) as caught:
            load_avatar(path)
        assert "\n" not in str(caught.value)
        with pytest.raises(ValueError, match=message):  # what VmcSink (and hop-live) sees
            VmcSink("127.0.0.1", 9, VmcOptions(avatar=path))


def test_bridges_avatar_plain_glb_by_node_names(tmp_path):
    # A .glb without VRM data whose joints carry Mixamo names ("mixamorig:LeftArm"), facing +Z.
    import pygltflib

    source = tmp_path / "source.vrm"
    expected = make_avatar(source, version=1, scale=0.8)
    gltf = pygltflib.GLTF2.load_binary(source)
    mixamo = {"Chest": "Spine1", "UpperChest": "Spine2", "LeftUpperArm": "LeftArm", "RightUpperArm": "RightArm",
              "LeftLowerArm": "LeftForeArm", "RightLowerArm": "RightForeArm", "LeftUpperLeg": "LeftUpLeg",
              "RightUpperLeg": "RightUpLeg", "LeftLowerLeg": "LeftLeg", "RightLowerLeg": "RightLeg"}
    for node in gltf.nodes:
        if node.name in mixamo or node.name in ("Hips", "Spine", "Neck", "Head", "LeftHand", "RightHand"):
            node.name = "mixamorig:" + mixamo.get(node.name, node.name)
    gltf.extensions, gltf.extensionsUsed = {}, []
    plain = tmp_path / "mixamo.glb"
    gltf.save_binary(str(plain))
    avatar = load_avatar(plain)
    assert avatar.kind == "gltf" and avatar.space == "gltf"
    for name in ("Hips", "Spine", "Chest", "UpperChest", "Neck", "Head", "LeftUpperArm", "RightLowerArm"):
        np.testing.assert_allclose(avatar.bone(name).local_position, expected[name], atol=1e-12)


CLI_SCRIPT = """
import contextlib, io, json, sys
from hop.engine.cli import build_parser, main, options_from_args
runs = json.loads(sys.argv[1])
good = options_from_args(build_parser().parse_args(runs[0]))
results = [str(good.vmc_avatar)]
for argv in runs[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_bridges_hop_live_avatar_flag(tmp_path):
    # --avatar is read before anything starts: a file that is no usable avatar is one line, exit status 2.
    import json

    avatar = tmp_path / "small.vrm"
    make_avatar(avatar, version=0, scale=0.8)
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")  # never read: the options are refused first
    bad = tmp_path / "bad.vrm"
    bad.write_text("hello")
    vmc = ["--input", str(wav), "--vmc", "127.0.0.1", "--avatar"]
    runs = [vmc + [str(avatar)], vmc + [str(bad)], vmc + [str(tmp_path / "none.vrm")],
            ["--input", str(wav), "--bvh", str(tmp_path / "o.bvh"), "--avatar", str(avatar)]]
    done = subprocess.run([sys.executable, "-c", CLI_SCRIPT, json.dumps(runs)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    chosen, *refused = json.loads(done.stdout.strip().splitlines()[-1])
    assert chosen == str(avatar)
    for (code, stderr), message in zip(refused, ("not a readable glTF", "not found", "applies to --vmc")):
        assert code == 2 and len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
        assert stderr.startswith("hop-live: --avatar")


@pytest.mark.slow
def test_bridges_hop_live_vmc_with_avatar_end_to_end(receiver, tmp_path):
    """hop-live itself (--input --fast --vmc --avatar, the default built-in checkpoint, lip sync from the
    voice) into the receiver process: 3 s of speech then 2 s of silence, onto a 0.8-scale VRM 1.0 with
    finger bones; its hands and fingers move all along."""
    import json

    from scipy.io import wavfile

    rate, speech = wavfile.read(REPO / "engine" / "assets" / "demo_speech.wav")
    audio = np.concatenate([speech[rate:4 * rate], np.zeros(2 * rate, dtype=speech.dtype)])
    wav = tmp_path / "talk_then_silence.wav"
    wavfile.write(wav, rate, audio)
    avatar = tmp_path / "small.vrm"
    expected = make_avatar(avatar, version=1, scale=0.8)
    run = subprocess.run([sys.executable, "-m", "hop.engine.cli", "--input", str(wav), "--fast", "--no-asr",
                          "--vmc", f"127.0.0.1:{receiver.port}", "--avatar", str(avatar)],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    emitted = summary["frames_emitted"]
    frames = frames_of(receiver.collect(emitted, timeout=10))
    assert len(frames) == emitted > 100
    times, mouth = [], []
    rotations: dict[str, list[list[float]]] = {name: [] for name in expected}
    for frame in frames:
        positions = {m["args"][0]: np.array(m["args"][1:4]) for m in frame if m["address"] == "/VMC/Ext/Bone/Pos"}
        assert set(positions) == set(expected)
        for name, position in positions.items():
            np.testing.assert_allclose(position, expected[name], atol=2e-7, err_msg=name)
        for m in frame:
            if m["address"] == "/VMC/Ext/Bone/Pos":
                rotations[m["args"][0]].append(m["args"][4:8])
        blend = {m["args"][0]: m["args"][1] for m in frame if m["address"] == "/VMC/Ext/Blend/Val"}
        mouth.append(max(blend.get(name, 0.0) for name in MOUTH))
        times.append(frame[-1]["args"][0])
    period = np.diff(times)
    assert np.allclose(period, period[0], atol=1e-5) and abs(period[0] - 5.0 / emitted) < 0.01 * 5.0 / emitted
    times, mouth = np.array(times), np.array(mouth)
    assert mouth[times < 3.0].max() > 0.3  # the mouth opens while the speaker talks
    assert mouth[times > 3.5].max() < 0.05  # and is closed half a second into the silence
    assert_hands_and_fingers_move(rotations)


# The default checkpoint is TED Expressive: wrist and three joints per finger. The hand bone follows
# wrist -> middle_1, Proximal and Intermediate follow finger_1 -> _2 and _2 -> _3 (the thumb's
# Unity Proximal/Intermediate: VRM 1.0's thumbMetacarpal/thumbProximal); Distal has no joint
# beyond it in the data and is held at rest.
HANDS = ("LeftHand", "RightHand")
DRIVEN_FINGERS = tuple(f"{side}{finger}{part}" for side in ("Left", "Right")
                       for finger in ("Thumb", "Index", "Middle", "Ring", "Little")
                       for part in ("Proximal", "Intermediate"))


def assert_hands_and_fingers_move(rotations: dict[str, list[list[float]]]) -> None:
    """Every hand and driven finger bone of a Unity humanoid turns over the run: away from its
    rest (identity, the test avatar has no rest rotations) and from one frame to another."""
    for name in HANDS + DRIVEN_FINGERS:
        local = Rotation.from_quat(np.array(rotations[name]))
        from_rest = np.degrees(local.magnitude())
        from_first = np.degrees((local[0].inv() * local).magnitude())
        steps = np.degrees((local[:-1].inv() * local[1:]).magnitude())
        assert from_rest.max() > 5.0, f"{name} never leaves its rest pose ({from_rest.max():.2f} degrees)"
        assert from_first.max() > 5.0, f"{name} frozen: within {from_first.max():.2f} degrees of its first pose"
        moving = (steps > 0.01).mean()
        assert moving > 0.5, f"{name} still in {1 - moving:.0%} of the frame steps"
