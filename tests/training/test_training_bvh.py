"""BVH -> TED directions: a hand-made BVH with known answers, and the real files beside the project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from hop.model.skeleton import TED_GESTURE
from hop.training.data import bvh
from hop.training.data.clips import POSE_FPS, SAMPLE_RATE, read_clip, read_manifest

L_UPPER, L_FORE, R_UPPER, R_FORE = 4, 5, 7, 8

# y-up, facing +z, subject's left +x; 30 fps. Channel columns:
# Hips 0-5, Spine1 6-8, Neck 9-11, Head 12-14, LeftShoulder 15-17, LeftArm 18-20, LeftForeArm 21-23,
# LeftHand 24-26, RightShoulder 27-29, RightArm 30-32, RightForeArm 33-35, RightHand 36-38,
# LeftUpLeg 39-41, RightUpLeg 42-44
HIERARCHY = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Spine1
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    JOINT Neck
    {
      OFFSET 0 12 0
      CHANNELS 3 Zrotation Yrotation Xrotation
      JOINT Head
      {
        OFFSET 0 4 1
        CHANNELS 3 Zrotation Yrotation Xrotation
        End Site
        {
          OFFSET 0 8 0
        }
      }
    }
    JOINT LeftShoulder
    {
      OFFSET 1 11 0
      CHANNELS 3 Zrotation Yrotation Xrotation
      JOINT LeftArm
      {
        OFFSET 6 0 0
        CHANNELS 3 Zrotation Yrotation Xrotation
        JOINT LeftForeArm
        {
          OFFSET 12 0 0
          CHANNELS 3 Zrotation Yrotation Xrotation
          JOINT LeftHand
          {
            OFFSET 10 0 0
            CHANNELS 3 Zrotation Yrotation Xrotation
            End Site
            {
              OFFSET 3 0 0
            }
          }
        }
      }
    }
    JOINT RightShoulder
    {
      OFFSET -1 11 0
      CHANNELS 3 Zrotation Yrotation Xrotation
      JOINT RightArm
      {
        OFFSET -6 0 0
        CHANNELS 3 Zrotation Yrotation Xrotation
        JOINT RightForeArm
        {
          OFFSET -12 0 0
          CHANNELS 3 Zrotation Yrotation Xrotation
          JOINT RightHand
          {
            OFFSET -10 0 0
            CHANNELS 3 Zrotation Yrotation Xrotation
            End Site
            {
              OFFSET -3 0 0
            }
          }
        }
      }
    }
  }
  JOINT LeftUpLeg
  {
    OFFSET 4 -2 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 0 -40 0
    }
  }
  JOINT RightUpLeg
  {
    OFFSET -4 -2 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 0 -40 0
    }
  }
}
"""
N_CHANNELS = 45


def _frames(*settings: dict[int, float]) -> np.ndarray:
    motion = np.zeros((len(settings), N_CHANNELS))
    for f, values in enumerate(settings):
        for column, value in values.items():
            motion[f, column] = value
    return motion


def _bvh_text(motion: np.ndarray, frame_time: float = 1 / 30) -> str:
    rows = "\n".join(" ".join(f"{v:g}" for v in row) for row in motion)
    return f"{HIERARCHY}MOTION\nFrames: {len(motion)}\nFrame Time: {frame_time:.6f}\n{rows}\n"


def _ted(motion: np.ndarray) -> np.ndarray:
    return bvh.bvh_to_ted(bvh.parse_bvh(_bvh_text(motion))).reshape(-1, 9, 3)


def test_parse_structure():
    parsed = bvh.parse_bvh(_bvh_text(_frames({0: 5.0}, {})))
    assert [j.name for j in parsed.joints][:4] == ["Hips", "Spine1", "Neck", "Head"]
    assert parsed.joints[parsed.index("LeftArm")].parent == parsed.index("LeftShoulder")
    assert parsed.joints[parsed.index("RightUpLeg")].channel_start == 42
    assert parsed.motion.shape == (2, N_CHANNELS) and parsed.motion[0, 0] == 5.0
    assert parsed.fps == pytest.approx(30.0, rel=1e-4)
    with pytest.raises(ValueError, match="holds"):
        bvh.parse_bvh(_bvh_text(_frames({})).replace("Frames: 1", "Frames: 2"))


def test_rest_pose_is_a_t_pose():
    b = _ted(_frames({}))[0]
    assert b[L_UPPER] @ [-1, 0, 0] > 0.999 and b[L_FORE] @ [-1, 0, 0] > 0.999
    assert b[R_UPPER] @ [1, 0, 0] > 0.999 and b[R_FORE] @ [1, 0, 0] > 0.999
    assert b[0] @ [0, -1, 0] > 0.999
    mean = TED_GESTURE.mean_pose().reshape(9, 3)
    for bone in (1, 2):  # head points follow TED's mean head bones in the rest pose
        assert b[bone] @ (mean[bone] / np.linalg.norm(mean[bone])) > 0.999


def test_known_rotations():
    b = _ted(_frames(
        {18: -90.0},  # LeftArm Zrotation -90: the left arm hangs down
        {18: -90.0, 22: -90.0},  # ... and LeftForeArm Yrotation -90: the forearm points forward
        {30: 90.0, 12: 30.0},  # RightArm Zrotation +90: right arm down; Head Zrotation: the head tilts
    ))
    assert b[0, L_UPPER] @ [0, 1, 0] > 0.999 and b[0, L_FORE] @ [0, 1, 0] > 0.999
    assert b[0, R_UPPER] @ [1, 0, 0] > 0.999
    assert b[1, L_UPPER] @ [0, 1, 0] > 0.999 and b[1, L_FORE] @ [0, 0, 1] > 0.999
    assert b[2, R_UPPER] @ [0, 1, 0] > 0.999
    rest = _ted(_frames({}))[0]
    assert b[2, 2] @ rest[2] < 0.95  # the head top moved with the head
    assert np.allclose(b[2, 0], rest[0], atol=1e-6)  # the spine did not


def test_channel_order_is_respected():
    text = """HIERARCHY
ROOT A
{
  OFFSET 0 0 0
  CHANNELS 2 Xrotation Yrotation
  JOINT B
  {
    OFFSET 1 0 0
    CHANNELS 0
    End Site
    {
      OFFSET 0 0 0
    }
  }
}
MOTION
Frames: 1
Frame Time: 0.1
90 90
"""
    positions, _ = bvh.forward_kinematics(bvh.parse_bvh(text))
    assert np.allclose(positions[0, 1], [0, 1, 0], atol=1e-9)  # Rx(90) @ Ry(90) @ x = +y
    swapped = text.replace("Xrotation Yrotation", "Yrotation Xrotation")
    positions, _ = bvh.forward_kinematics(bvh.parse_bvh(swapped))
    assert np.allclose(positions[0, 1], [0, 0, -1], atol=1e-9)  # Ry(90) @ Rx(90) @ x = -z


def test_heading_and_root_translation_removed():
    plain = {18: -40.0, 21: 20.0, 33: 15.0, 9: 10.0}
    turned = {**plain, 4: 120.0, 0: 50.0, 2: -30.0}  # Hips Yrotation 120 and moved
    b = _ted(_frames(plain, turned))
    assert np.allclose(b[0], b[1], atol=1e-6)


def test_neck_falls_back_to_the_clavicles():
    text = _bvh_text(_frames({18: -90.0}))
    with_neck = bvh.bvh_to_ted(bvh.parse_bvh(text)).reshape(9, 3)
    # rename the neck so it is not found: the neck becomes the clavicles' midpoint (0, 21, 0),
    # which is below the real neck (0, 22, 0): the spine bone stays vertical, the shoulder bones tilt up
    without = bvh.bvh_to_ted(bvh.parse_bvh(text.replace("JOINT Neck", "JOINT Throat"))).reshape(9, 3)
    assert np.allclose(without[0], with_neck[0], atol=1e-6)
    assert without[3, 1] < with_neck[3, 1] - 0.01  # TED up is -y
    with pytest.raises(ValueError, match="left_wrist"):
        bvh.bvh_to_ted(bvh.parse_bvh(text.replace("JOINT LeftHand", "JOINT Mitt")))
    mapped = bvh.bvh_to_ted(bvh.parse_bvh(text.replace("JOINT LeftHand", "JOINT Mitt")),
                            joint_map={"left_wrist": "Mitt"})
    assert np.allclose(mapped, with_neck.reshape(1, 27), atol=1e-6)


def test_cli_with_speech_and_words(tmp_path):
    motion = _frames(*[{18: -60.0 + 30.0 * np.sin(f / 5)} for f in range(90)])  # 3 s at 30 fps
    (tmp_path / "take.bvh").write_text(_bvh_text(motion))
    wavfile.write(tmp_path / "take.wav", 22050, (0.1 * np.sin(np.arange(3 * 22050) / 10)).astype(np.float32))
    (tmp_path / "take.TextGrid").write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n3\n<exists>\n1\n"IntervalTier"\n"words"\n'
        '0\n3\n3\n0\n1\n""\n1\n1.5\n"hello"\n1.5\n3\n"there"\n')
    out = tmp_path / "corpus"
    assert bvh.main([str(out), str(tmp_path / "take.bvh"), "--speaker", "tester"]) == 0
    manifest = read_manifest(out)
    clip = read_clip(out, manifest.clips[0])
    assert manifest.speakers == ["tester"] and clip.n_frames == 45
    assert clip.audio.size * POSE_FPS // SAMPLE_RATE == 45
    assert clip.words() == [("hello", 1.0, 1.5), ("there", 1.5, 3.0)]
    # 15 fps frame i is 30 fps frame 2i
    direct = bvh.bvh_to_ted(bvh.read_bvh(tmp_path / "take.bvh"))[::2]
    assert np.allclose(clip.dir_vec, direct, atol=1e-5)


@pytest.fixture(scope="module")
def bvh_folder():
    folder = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bvh"  # ../shared/data beside the repo
    if not folder.is_dir():
        pytest.skip(f"real BVH files not found at {folder}")
    return folder


def test_real_bvh_files_look_like_people(bvh_folder):
    cmu = bvh.convert_bvh(bvh_folder / "cmu_01_01_fairmotion.bvh")
    assert cmu.n_frames == round(2752 / 120 * POSE_FPS)
    first = cmu.dir_vec[0].reshape(9, 3)
    assert first[L_UPPER] @ [-1, 0, 0] > 0.9 and first[R_UPPER] @ [1, 0, 0] > 0.9  # CMU takes start in a T-pose
    for name in ("cmu_01_01_fairmotion.bvh", "pymo_AV_8Walk_Meredith_HVHA_Rep1.bvh"):
        clip = cmu if name.startswith("cmu") else bvh.convert_bvh(bvh_folder / name)
        joints = TED_GESTURE.dir_vec_to_joints(clip.dir_vec[len(clip.dir_vec) // 4:])
        up = -joints[..., 1]
        assert np.all(up[:, 3] > up[:, 1]) and np.all(up[:, 1] > up[:, 0]), name  # head above neck above spine
        assert np.all(up[:, 6] < up[:, 4]) and np.all(up[:, 9] < up[:, 7]), name  # walking: hands below shoulders
        assert np.all(joints[:, 4, 0] < joints[:, 7, 0]), name  # facing the camera
