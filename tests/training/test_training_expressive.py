"""Real motion onto the TED Expressive skeleton: joint maps, the three readers, two-source agreement.

The agreement thresholds come from the figures measured on take 0_1_1 (BEAT2 SMPL-X
vs BEAT v1 BVH, ``python -m hop.training.data.agreement``): mean bone angle 7.9 deg
torso/head, 8.0 / 7.6 deg left / right arm, 13.8 / 13.5 deg left / right fingers, lag
0.042 s, cross-correlation peak 0.95. Most of it is a constant per-bone offset (the
generic SMPL-X rest skeleton vs the speaker's own BVH skeleton; the thumb's root
joint sits 2 cm from the wrist in BEAT's rig): after removing one constant rotation
per bone about 4 deg is left on the body. The limits sit about 25 % above the
measured figures and below what known mistakes give on the same take: 0.1 s of
misalignment gives 10.0 deg on the arms and 19 deg on the fingers, swapping the
index and little fingers' joints 19.5 deg, swapping left and right 55-70 deg.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from hop.model.skeleton import TED_EXPRESSIVE
from hop.training.data import agreement, bvh, expressive
from hop.training.data.expressive import BUILTIN_MAPS, body_parts, finger_flexion_deg, load_joint_map

BODY_LIMIT_DEG = 10.0  # torso/head and each arm; measured 7.6-8.0
FINGER_LIMIT_DEG = 17.0  # each hand's fingers; measured 13.5-13.8
NAMES = TED_EXPRESSIVE.joint_names
BONE = {f"{NAMES[p]}->{NAMES[c]}": i for i, (p, c, _) in enumerate(TED_EXPRESSIVE.bones)}

BEAT1 = "beat1/2_scott_0_1_1.bvh"
BEAT2 = "beat2/2_scott_0_1_1.npz"
MIXAMO = "mixamo/1_fufu_0_7_7_full.bvh"


def _need(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"real motion file {path} not found (it sits beside the project on dev machines only)")
    return path


def _bones(dir_vec) -> np.ndarray:
    return np.asarray(dir_vec, dtype=np.float64).reshape(len(dir_vec), -1, 3)


# --- joint maps --------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN_MAPS)
def test_joint_maps_cover_every_expressive_joint_once(name):
    jm = load_joint_map(name)
    assert set(jm.joints) | set(jm.face) == set(NAMES)
    assert not set(jm.joints) & set(jm.face)
    assert set(jm.face) == set(expressive.FACE_JOINTS)
    assert len(set(jm.joints.values())) == len(jm.joints)  # no source joint used twice
    assert TED_EXPRESSIVE.n_joints == 43 and TED_EXPRESSIVE.pose_dim == 126


def test_smplx_map_follows_the_smplx_kinematic_order():
    rest = load_joint_map("smplx").rest
    expected = {"pelvis": 0, "left_hip": 1, "spine2": 6, "neck": 12, "head": 15, "left_wrist": 20,
                "right_wrist": 21, "left_index1": 25, "left_middle1": 28, "left_pinky1": 31, "left_ring1": 34,
                "left_thumb1": 37, "left_thumb3": 39, "right_index1": 40, "right_thumb3": 54}
    for joint, index in expected.items():
        assert rest[joint][0] == index, joint
    for side in ("left", "right"):
        for finger in ("index", "middle", "ring", "pinky", "thumb"):
            assert rest[f"{side}_{finger}1"][1] == f"{side}_wrist"
            assert rest[f"{side}_{finger}3"][1] == f"{side}_{finger}2"
            assert rest[f"{side}_{finger}1"][0] + 2 == rest[f"{side}_{finger}3"][0]


def test_broken_maps_are_refused(tmp_path):
    text = (expressive.MAPS_DIR / "beat1.toml").read_text()
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace('left_index_2 = "LeftHandIndex2"\n', ""))
    with pytest.raises(ValueError, match="left_index_2"):
        load_joint_map(missing)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(text.replace('left_index_2 = "LeftHandIndex2"', 'left_index_two = "LeftHandIndex2"'))
    with pytest.raises(ValueError, match="left_index_two"):
        load_joint_map(unknown)
    twice = tmp_path / "twice.toml"
    twice.write_text(text.replace('[joints]', '[joints]\nnose = "Head"'))
    with pytest.raises(ValueError, match="nose"):
        load_joint_map(twice)
    smplx_text = (expressive.MAPS_DIR / "smplx.toml").read_text()
    order = tmp_path / "order.toml"  # a joint before its parent
    line = next(x for x in smplx_text.splitlines() if x.startswith("left_index1 ="))
    order.write_text(smplx_text.replace(line + "\n", "").replace("[rest]", "[rest]\n" + line))
    with pytest.raises(ValueError, match="before its parent"):
        load_joint_map(order)
    with pytest.raises(ValueError, match="no joint map"):
        load_joint_map("no_such_map")


def test_a_map_is_data(tmp_path):
    """A TOML outside the package drives the same converter; face points may be overridden."""
    text = (expressive.MAPS_DIR / "smplx.toml").read_text()
    custom = tmp_path / "custom.toml"
    custom.write_text(text.replace("[head]\njoint = \"head\"",
                                   "[head]\njoint = \"head\"\npoints = { nose = [0.0, 0.0, 0.2] }"))
    jm = load_joint_map(custom)
    assert jm.name == "custom" and np.allclose(jm.face["nose"], [0, 0, 0.2])
    assert np.allclose(jm.face["left_eye"], load_joint_map("smplx").face["left_eye"])
    out = expressive.motion_to_expressive(expressive.smplx_motion(np.zeros((1, 165)), 30.0, jm), jm)
    assert np.allclose(_bones(out)[0, BONE["neck->nose"]], [0, 0, 1], atol=0.35)  # more forward than the default


# --- SMPL-X: hand-made poses with known answers -------------------------------------

def _smplx(**joint_rotvecs) -> np.ndarray:
    poses = np.zeros((1, 165))
    for joint, rotvec in joint_rotvecs.items():
        j = int(joint[1:])
        poses[0, 3 * j:3 * j + 3] = rotvec
    jm = load_joint_map("smplx")
    return _bones(expressive.motion_to_expressive(expressive.smplx_motion(poses, 30.0, jm), jm))[0]


def test_smplx_zero_pose_in_ted_axes():
    b = _smplx()
    # T-pose; TED: up -y, forward +z, the subject's left -x
    assert b[BONE["spine->neck"]] @ [0, -1, 0] > 0.99
    assert b[BONE["left_shoulder->left_elbow"]] @ [-1, 0, 0] > 0.99
    assert b[BONE["right_elbow->right_wrist"]] @ [1, 0, 0] > 0.99
    for side, out in (("left", -1), ("right", 1)):
        for finger in ("index", "middle", "ring", "little"):
            for k in (1, 2):  # straight fingers continue the arm
                assert b[BONE[f"{side}_{finger}_{k}->{side}_{finger}_{k + 1}"]] @ [out, 0, 0] > 0.8
        assert b[BONE[f"{side}_wrist->{side}_thumb_1"]][2] > 0.3  # thumbs forward
    nose = b[BONE["neck->nose"]]
    assert nose[2] > 0.3 and nose[1] < -0.3  # the nose is forward of and above the neck
    assert b[BONE["nose->left_eye"]][0] < 0 < b[BONE["nose->right_eye"]][0]
    assert b[BONE["left_eye->left_ear"]][2] < 0  # ears behind the eyes


def test_smplx_finger_joint_bends_only_its_finger():
    rest = _smplx()
    # left index2 (SMPL-X 26) turned 90 deg about the horizontal axis across its bone: the index's last
    # bone bends straight down (palm side; TED +y)
    at = {j: v[2] for j, v in load_joint_map("smplx").rest.items()}
    bone = at["left_index3"] - at["left_index2"]
    axis = np.cross(bone / np.linalg.norm(bone), [0, -1, 0])
    bent = _smplx(j26=axis / np.linalg.norm(axis) * np.pi / 2)
    changed = [i for i in range(TED_EXPRESSIVE.n_bones) if rest[i] @ bent[i] < 0.9999]
    assert changed == [BONE["left_index_2->left_index_3"]]
    assert bent[BONE["left_index_2->left_index_3"]] @ [0, 1, 0] > 0.999
    flex = finger_flexion_deg(bent.reshape(1, -1))[0]
    flex0 = finger_flexion_deg(rest.reshape(1, -1))[0]
    assert np.argmax(np.abs(flex - flex0)) == 5  # left hand: thumb 0-2, index 3-5
    assert flex[5] - flex0[5] == pytest.approx(90.0, abs=1.0)


def test_smplx_wrist_carries_the_hand():
    # left elbow (18) bent 90 deg about y: the forearm points forward, and so does the whole hand
    b = _smplx(j18=[0, -np.pi / 2, 0])
    assert b[BONE["left_elbow->left_wrist"]] @ [0, 0, 1] > 0.99
    assert b[BONE["left_wrist->left_middle_1"]] @ [0, 0, 1] > 0.99
    assert b[BONE["right_wrist->right_middle_1"]] @ [1, 0, 0] > 0.99  # the other hand stays


def test_heading_is_removed():
    poses = np.zeros((2, 165))
    poses[:, 3 * 16:3 * 16 + 3] = [0, 0, -1.0]
    poses[:, 3 * 27:3 * 27 + 3] = [0, 0, -0.7]
    poses[1, 0:3] = [0, 2.0, 0]  # the whole body turned 115 deg about the vertical
    jm = load_joint_map("smplx")
    out = expressive.motion_to_expressive(expressive.smplx_motion(poses, 30.0, jm), jm)
    assert np.allclose(out[0], out[1], atol=1e-5)


# --- BVH: a header whose frame count disagrees with the rows ------------------------

MINI = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Chest
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 0 10 0
    }
  }
}
MOTION
Frames: %d
Frame Time: %s
"""


def _mini(header_frames: int, rows: int, frame_time: str = "0.008333") -> str:
    body = "\n".join(" ".join(str(float(r + c)) for c in range(9)) for r in range(rows))
    return MINI % (header_frames, frame_time) + body + "\n"


def test_lenient_bvh_reads_rows_and_reports_a_decimated_header():
    text = _mini(7669, 957)
    with pytest.raises(ValueError, match="strict=False"):
        bvh.parse_bvh(text)
    with pytest.warns(UserWarning, match="7669"):
        parsed = bvh.parse_bvh(text, strict=False)
    assert parsed.motion.shape == (957, 9) and parsed.motion[956, 0] == 956.0
    assert parsed.header_frames == 7669 and parsed.fps == 15.0  # 1 row in 8 of 120 fps
    assert "957 rows" in parsed.notes[0] and "8-fold" in parsed.notes[0]


def test_lenient_bvh_other_disagreements():
    with pytest.warns(UserWarning):
        odd = bvh.parse_bvh(_mini(100, 77, "0.033333"), strict=False)  # not a whole multiple: header's rate kept
    assert odd.motion.shape == (77, 9) and odd.fps == 30.0 and "header's" in odd.notes[0]
    with pytest.warns(UserWarning):
        short = bvh.parse_bvh(_mini(4, 10, "0.033333"), strict=False)  # more rows than declared: all read
    assert short.motion.shape == (10, 9) and short.header_frames == 4
    with pytest.warns(UserWarning, match="do not fill"):
        torn = bvh.parse_bvh(_mini(3, 3, "0.033333") + "1 2 3\n", strict=False)
    assert torn.motion.shape == (3, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a consistent file says nothing
        clean = bvh.parse_bvh(_mini(5, 5, "0.033333"), strict=False)
    assert clean.header_frames is None and clean.notes == []
    forced = bvh.parse_bvh(_mini(5, 5, "0.033333"), fps=15)
    assert forced.fps == 15.0 and "caller" in forced.notes[0]


# --- the real files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def beat1(shared_data):
    return expressive.read_expressive(_need(shared_data, BEAT1), "beat1", fps=None)


@pytest.fixture(scope="module")
def beat2(shared_data):
    return expressive.read_expressive(_need(shared_data, BEAT2), fps=None)


@pytest.fixture(scope="module")
def mixamo(shared_data):
    return expressive.read_expressive(_need(shared_data, MIXAMO), "mixamo", fps=None)


def test_real_files_frames_and_rates(beat1, beat2, mixamo):
    assert (beat1.source_frames, beat1.source_fps) == (957, 15.0)  # the header's 7669 at 120 fps is wrong
    assert any("7669" in note and "957 rows" in note for note in beat1.notes)
    assert (beat2.source_frames, beat2.source_fps) == (1906, 30.0) and beat2.notes == []
    assert (mixamo.source_frames, mixamo.source_fps) == (2379, 30.0) and mixamo.notes == []
    for exp in (beat1, beat2, mixamo):
        assert exp.dir_vec.shape == (exp.n_frames, 126) and exp.dir_vec.dtype == np.float32
        assert np.allclose(np.linalg.norm(_bones(exp.dir_vec), axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("relative", [BEAT1, MIXAMO])
def test_forward_kinematics_matches_bvhio(shared_data, tmp_path, relative):
    """World positions of every joint agree with bvhio, the independent BVH reader, on six rows of
    each real hierarchy (BEAT v1 rotates XYZ, Mixamo YXZ; Mixamo's offsets lie along each bone)."""
    bvhio = pytest.importorskip("bvhio")
    head, motion = _need(shared_data, relative).read_text().split("MOTION", 1)
    rows = [line for line in motion.splitlines() if line.strip()][2:][300:306]
    small = tmp_path / "small.bvh"  # a consistent header: bvhio trusts it
    small.write_text(f"{head}MOTION\nFrames: {len(rows)}\nFrame Time: 0.033333\n" + "\n".join(rows) + "\n")
    ours = bvh.read_bvh(small)
    positions, _ = bvh.forward_kinematics(ours)
    hierarchy = bvhio.readAsHierarchy(str(small))
    names = [j.name for j in ours.joints]
    checked = 0
    for frame in range(len(rows)):
        hierarchy.loadPose(frame)
        for joint, *_ in hierarchy.layout():
            if joint.Name in names:
                assert np.allclose(np.array(joint.PositionWorld), positions[frame, names.index(joint.Name)],
                                   atol=1e-3), (frame, joint.Name)
                checked += 1
    assert checked >= len(rows) * 50


def test_resampling_to_a_requested_rate(shared_data, beat1, beat2):
    up = expressive.read_expressive(_need(shared_data, BEAT1), "beat1", fps=30)
    assert up.n_frames == 1914 and up.fps == 30.0
    assert np.allclose(up.dir_vec[::2], beat1.dir_vec, atol=1e-6)
    a, b, mid = _bones(beat1.dir_vec[10:11]), _bones(beat1.dir_vec[11:12]), _bones(up.dir_vec[21:22])
    # 1:2 direction interpolation is slerp: the new frame is halfway along the arc
    assert np.allclose(np.sum(mid * a, -1), np.sum(mid * b, -1), atol=1e-5)
    down = expressive.read_expressive(_need(shared_data, BEAT2), fps=15)
    assert down.n_frames == 953 and np.allclose(down.dir_vec, beat2.dir_vec[::2], atol=1e-6)


def _joints(exp):
    return TED_EXPRESSIVE.dir_vec_to_joints(exp.dir_vec)


@pytest.mark.parametrize("which", ["beat1", "beat2", "mixamo"])
def test_real_motion_looks_like_a_person_facing_the_camera(which, request):
    exp = request.getfixturevalue(which)
    j = _joints(exp)
    up = -j[..., 1]
    i = {n: k for k, n in enumerate(NAMES)}
    assert np.mean(up[:, i["neck"]] > up[:, i["spine"]]) > 0.99
    assert np.mean(up[:, i["nose"]] > up[:, i["neck"]]) > 0.99
    assert np.mean(up[:, i["left_eye"]] > up[:, i["nose"]]) > 0.95
    assert np.mean(j[:, i["left_shoulder"], 0] < j[:, i["right_shoulder"], 0]) > 0.99  # subject's left is -x
    assert np.mean(j[:, i["left_eye"], 0] < j[:, i["right_eye"], 0]) > 0.95
    assert np.mean(j[:, i["nose"], 2] > j[:, i["left_ear"], 2]) > 0.95  # the face is forward
    assert np.mean(up[:, i["left_wrist"]] < up[:, i["left_shoulder"]]) > 0.8  # a speaker's hands hang mostly
    # fingers lie beyond the wrist, roughly along the forearm
    b = _bones(exp.dir_vec)
    for side in ("left", "right"):
        forearm = b[:, BONE[f"{side}_elbow->{side}_wrist"]]
        for finger in ("index", "middle", "ring", "little"):
            assert np.mean(np.sum(forearm * b[:, BONE[f"{side}_wrist->{side}_{finger}_1"]], -1)) > 0.5, (side, finger)


@pytest.mark.parametrize("which", ["beat1", "beat2", "mixamo"])
def test_fingers_move(which, request):
    """Non-trivial finger flexion: every hand's joints bend over time (std over time above 3 deg on
    average, measured 5.3-12.9), and the hand's bend spans more than 15 deg between its 5th and 95th
    percentile frames; a frozen or unmapped hand gives 0."""
    exp = request.getfixturevalue(which)
    flex = finger_flexion_deg(exp.dir_vec)
    for side, cols in (("left", slice(0, 15)), ("right", slice(15, 30))):
        hand = flex[:, cols]
        assert hand.std(axis=0).mean() > 3.0, (which, side)
        total = hand.sum(axis=1)
        assert np.percentile(total, 95) - np.percentile(total, 5) > 15.0, (which, side)
    frozen = np.repeat(exp.dir_vec[:1], 10, axis=0)
    assert finger_flexion_deg(frozen).std(axis=0).max() < 1e-6


# --- the two-source agreement ---------------------------------------------------------

@pytest.fixture(scope="module")
def report(shared_data):
    return agreement.agreement(_need(shared_data, BEAT2), _need(shared_data, BEAT1))


def test_two_sources_line_up_in_time(report):
    assert 0.0 <= report["lag_s"] <= 0.1  # measured 0.042 s: under one 15 fps row
    assert report["xcorr_peak"] > 0.9  # measured 0.95
    assert report["compared_frames"] > 900


def test_two_sources_agree_per_body_part(report):
    parts = report["parts"]
    assert set(parts) == {"torso_head", "left_arm", "right_arm", "left_fingers", "right_fingers"}
    for part in ("torso_head", "left_arm", "right_arm"):
        assert parts[part]["mean_deg"] < BODY_LIMIT_DEG, (part, parts[part])
    for part in ("left_fingers", "right_fingers"):
        assert parts[part]["mean_deg"] < FINGER_LIMIT_DEG, (part, parts[part])
    for part in ("left_arm", "right_arm", "left_fingers", "right_fingers"):  # the alignment helps
        assert parts[part]["mean_deg"] <= parts[part]["mean_deg_unaligned"]


def test_two_sources_fingers_move_together(report):
    for side in ("left", "right"):
        flex = report["finger_flexion"][side]
        assert flex["std_deg_first"] > 3.0 and flex["std_deg_second"] > 3.0
        assert flex["mean_corr"] > 0.3, flex  # measured 0.51 / 0.46; unrelated motion gives about 0


def test_find_lag_known_shift():
    rng = np.random.default_rng(0)
    signal = np.convolve(rng.standard_normal(900), np.ones(5) / 5, mode="same")
    later = np.concatenate([np.zeros(7), signal])[:900]  # the second is 7 frames late
    lag, peak = agreement.find_lag(signal, later, fps=30.0, max_lag_s=1.0)
    assert lag == pytest.approx(7 / 30, abs=0.01) and peak > 0.95
    lag, _ = agreement.find_lag(later, signal, fps=30.0, max_lag_s=1.0)
    assert lag == pytest.approx(-7 / 30, abs=0.01)


def test_body_parts_partition_the_bones():
    parts = body_parts()
    everything = sorted(i for idx in parts.values() for i in idx)
    assert everything == list(range(TED_EXPRESSIVE.n_bones))
    assert len(parts["left_fingers"]) == len(parts["right_fingers"]) == 15
    assert len(parts["left_arm"]) == len(parts["right_arm"]) == 3


# --- commands ------------------------------------------------------------------------------

def test_agreement_command_prints_json(shared_data, capsys):
    assert agreement.main([str(_need(shared_data, BEAT2)), str(_need(shared_data, BEAT1))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["parts"]) == set(body_parts()) and "lag_s" in out and len(out["bones_mean_deg"]) == 42


def test_expressive_command_writes_directions(shared_data, tmp_path, capsys):
    target = tmp_path / "mixamo.npy"
    assert expressive.main([str(_need(shared_data, MIXAMO)), "--map", "mixamo", "--out", str(target)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 1190 and summary["fps"] == 15.0
    assert np.load(target).shape == (1190, 126)
    with pytest.raises(ValueError, match="name the joint map"):
        expressive.read_expressive(_need(shared_data, MIXAMO))
