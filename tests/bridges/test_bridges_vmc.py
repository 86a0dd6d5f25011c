import numpy as np
import pytest
from bridges_testkit import OscReceiverProcess, messages_of, perturbed
from scipy.spatial.transform import Rotation

from hop.bridges.frame import PoseFrame
from hop.bridges.retarget import load_rig
from hop.bridges.vmc import VmcOptions, VmcSink
from hop.model.skeleton import TED_GESTURE

RIG = load_rig("unity_humanoid")
PARENT = {b.name: (RIG.bones[b.parent].name if b.parent >= 0 else None) for b in RIG.bones}


@pytest.fixture(scope="module")
def receiver():
    process = OscReceiverProcess()
    yield process
    process.close()


def left_arm_raised() -> np.ndarray:
    pose = TED_GESTURE.mean_pose().reshape(-1, 3).copy()
    pose[4] = [0.0, -1.0, 0.0]  # TED up is -y
    pose[5] = [-1.0, 0.0, 0.0]  # TED subject's left is -x
    return pose.reshape(-1)


def decoded_world_positions(bones: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Forward kinematics over what came off the wire: local positions and rotations per bone."""
    world: dict[str, tuple[np.ndarray, Rotation]] = {}
    for name in RIG.bone_names:  # parents first
        position, quat = bones[name]
        parent = PARENT[name]
        if parent is None:
            world[name] = (position, Rotation.from_quat(quat))
        else:
            parent_position, parent_rotation = world[parent]
            world[name] = (parent_position + parent_rotation.apply(position), parent_rotation * Rotation.from_quat(quat))
    return {name: position for name, (position, _) in world.items()}


def test_bridges_vmc_bundle_structure_and_handedness(receiver):
    sink = VmcSink("127.0.0.1", receiver.port, VmcOptions(blend_shapes=(("Blink", 0.25),), send_rate=30.0))
    rng = np.random.default_rng(0)
    poses = [left_arm_raised()] + [perturbed(TED_GESTURE.mean_pose(), rng, 0.2) for _ in range(29)]
    start = 1000.0
    for i, pose in enumerate(poses):
        sink.send(PoseFrame(i, start + i / 30, pose, speaking=True))
    lines = receiver.collect(len(poses))
    sink.close()
    assert len(lines) == len(poses)
    assert sink.stats()["sent"] == len(poses) and sink.stats()["errors"] == 0

    times = []
    for line in lines:
        messages = messages_of(line)
        addresses = [m["address"] for m in messages]
        assert addresses[0] == "/VMC/Ext/Root/Pos"
        assert addresses[1:56] == ["/VMC/Ext/Bone/Pos"] * 55
        assert addresses[56:] == ["/VMC/Ext/Blend/Val", "/VMC/Ext/Blend/Apply", "/VMC/Ext/OK", "/VMC/Ext/T"]
        assert messages[0]["types"] == "sfffffff" and messages[0]["args"][0] == "root"
        assert all(m["types"] == "sfffffff" for m in messages[1:56])
        assert messages[56]["types"] == "sf" and messages[56]["args"] == ["Blink", 0.25]
        # OK, protocol V2.5: loaded, calibration state 3 (calibrated), calibration mode 0 (normal).
        assert messages[57]["types"] == "" and messages[58] == {"address": "/VMC/Ext/OK", "types": "iii",
                                                                "args": [1, 3, 0]}
        assert messages[59]["types"] == "f"
        times.append(messages[59]["args"][0])

        bones = {m["args"][0]: (np.array(m["args"][1:4]), np.array(m["args"][4:8])) for m in messages[1:56]}
        assert set(bones) == set(RIG.bone_names) and len(bones) == 55
        for name, (position, quat) in bones.items():
            assert np.linalg.norm(position) > 0.005, f"{name} sent with a zero position"
            assert abs(np.linalg.norm(quat) - 1.0) < 1e-5, f"{name} quaternion is not unit"

    assert np.all(np.diff(times) > 0), "frames out of order"
    np.testing.assert_allclose(times, np.arange(len(poses)) / 30, atol=1e-4)

    # First frame: the left arm raised in TED space must be raised, on the avatar's left, in Unity space.
    first = {m["args"][0]: (np.array(m["args"][1:4]), np.array(m["args"][4:8])) for m in messages_of(lines[0])[1:56]}
    world = decoded_world_positions(first)
    assert world["LeftLowerArm"][1] - world["LeftUpperArm"][1] > 0.25  # elbow well above the shoulder (+Y up)
    assert world["LeftHand"][0] - world["LeftLowerArm"][0] < -0.2  # forearm to the avatar's left (-X)
    assert world["RightHand"][1] < world["RightUpperArm"][1]  # the right arm still hangs down
    assert world["Head"][1] > world["Neck"][1] > world["Hips"][1]


def test_bridges_vmc_driven_bones_only_and_other_streams_ignored(receiver):
    sink = VmcSink("127.0.0.1", receiver.port, VmcOptions(all_bones=False, stream=1))
    sink.send(PoseFrame(0, 1.0, TED_GESTURE.mean_pose(), speaking=False, stream=0))
    sink.send(PoseFrame(0, 1.0, TED_GESTURE.mean_pose(), speaking=False, stream=1))
    lines = receiver.collect(1)
    assert receiver.collect(1, timeout=0.3) == []  # the stream-0 frame was not sent
    names = [m["args"][0] for m in messages_of(lines[0]) if m["address"] == "/VMC/Ext/Bone/Pos"]
    assert sorted(names) == sorted(["Spine", "Neck", "Head", "LeftShoulder", "LeftUpperArm", "LeftLowerArm",
                                    "RightShoulder", "RightUpperArm", "RightLowerArm"])
    assert sink.stats()["ignored"] == 1
    sink.close()


def test_bridges_vmc_dead_target_and_bad_frames_are_counted_not_raised():
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    sink = VmcSink("127.0.0.1", dead_port)
    for i in range(5):
        sink.send(PoseFrame(i, float(i), TED_GESTURE.mean_pose(), speaking=False))
    sink.send(PoseFrame(5, 5.0, np.zeros(10, dtype=np.float32), speaking=False))
    stats = sink.stats()
    # A refusing target is counted as "refused" (a fault state) where UdpSender keeps one, else as errors.
    lost = stats["errors"] + stats.get("refused", 0)
    assert lost >= 2 and stats["sent"] + lost == 6
    assert "skeleton" in stats["last_error"]  # the malformed frame was the last error
    sink.close()


@pytest.mark.parametrize("kwargs,message", [
    ({"options": VmcOptions(rig="bvh_ted")}, "Unity-space"),
    ({"port": 0}, "1-65535"),
    ({"host": "no-such-host.invalid"}, "cannot resolve"),
])
def test_bridges_vmc_bad_configuration_is_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VmcSink(**kwargs)
