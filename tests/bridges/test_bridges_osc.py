import time

import numpy as np
import pytest
from bridges_testkit import OscReceiverProcess, messages_of, perturbed, random_unit_pose

from hop.bridges.frame import PoseFrame
from hop.bridges.osc import OscSink
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

ADDRESSES = ["/hop/frame", "/hop/stream", "/hop/time", "/hop/speaking", "/hop/skeleton", "/hop/dirvec", "/hop/joints"]


@pytest.fixture(scope="module")
def receiver():
    process = OscReceiverProcess()
    yield process
    process.close()


def by_address(line: dict) -> dict[str, dict]:
    messages = messages_of(line)
    assert [m["address"] for m in messages] == ADDRESSES
    return {m["address"]: m for m in messages}


def test_bridges_osc_native_frames_decode_in_order(receiver):
    sink = OscSink("127.0.0.1", receiver.port)
    rng = np.random.default_rng(0)
    frames = [PoseFrame(i, 5000.0 + i / 15, perturbed(TED_GESTURE.mean_pose(), rng, 0.2), speaking=i % 3 == 0, stream=2)
              for i in range(60)]
    for frame in frames:
        sink.send(frame)
        time.sleep(0.002)
    lines = receiver.collect(len(frames))
    assert len(lines) == len(frames)
    for frame, line in zip(frames, lines):
        got = by_address(line)
        assert got["/hop/frame"]["types"] == "i" and got["/hop/frame"]["args"] == [frame.index]
        assert got["/hop/stream"]["args"] == [2]
        assert got["/hop/time"]["types"] == "d" and got["/hop/time"]["args"] == [frame.capture_time]  # float64 exact
        assert got["/hop/speaking"]["types"] == "i" and got["/hop/speaking"]["args"] == [int(frame.speaking)]
        assert got["/hop/skeleton"]["types"] == "s" and got["/hop/skeleton"]["args"] == ["ted_gesture"]
        assert got["/hop/dirvec"]["types"] == "f" * 27
        np.testing.assert_array_equal(np.float32(got["/hop/dirvec"]["args"]), frame.dir_vec)
        assert got["/hop/joints"]["types"] == "f" * 30
        joints = np.array(got["/hop/joints"]["args"]).reshape(10, 3)
        # Joints must be consistent with the directions: bone vectors of the right length and direction.
        for k, (parent, child, length) in enumerate(TED_GESTURE.bones):
            np.testing.assert_allclose(joints[child] - joints[parent], length * frame.dir_vec[3 * k:3 * k + 3], atol=1e-5)
        np.testing.assert_allclose(joints[0], 0.0)
    assert sink.stats() == {"sent": 60, "dropped": 0, "errors": 0, "last_error": "", "refused": 0, "fault": "",
                            "fault_since": None}
    sink.close()


def test_bridges_osc_expressive_skeleton(receiver):
    sink = OscSink("127.0.0.1", receiver.port)
    pose = random_unit_pose(np.random.default_rng(1), TED_EXPRESSIVE.n_bones)
    sink.send(PoseFrame(0, 1.0, pose, speaking=True, skeleton="ted_expressive"))
    got = by_address(receiver.collect(1)[0])
    assert got["/hop/skeleton"]["args"] == ["ted_expressive"]
    assert len(got["/hop/dirvec"]["args"]) == 126 and len(got["/hop/joints"]["args"]) == 129
    sink.close()


def test_bridges_osc_bad_frame_counted(receiver):
    sink = OscSink("127.0.0.1", receiver.port)
    sink.send(PoseFrame(0, 1.0, np.zeros(5, dtype=np.float32), speaking=True))
    sink.send(PoseFrame(1, 1.0, TED_GESTURE.mean_pose(), speaking=True, skeleton="smpl"))
    stats = sink.stats()
    assert stats["errors"] == 2 and stats["sent"] == 0 and "unknown skeleton" in stats["last_error"]
    assert receiver.collect(1, timeout=0.3) == []
    sink.close()
