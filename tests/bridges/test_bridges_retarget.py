import re
from pathlib import Path

import numpy as np
import pytest
from bridges_testkit import angle_degrees, perturbed, random_unit_pose, world_positions, world_rotations
from scipy.spatial.transform import Rotation

from hop.bridges.retarget import (
    SPACES,
    Retargeter,
    Rig,
    RigBone,
    continue_hemisphere,
    convert_points,
    convert_rotations,
    convert_space,
    load_rig,
    make_sequence_continuous,
    parse_rig,
    retarget,
    source_directions,
)
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE, get_skeleton

RIG_SKELETONS = [("unity_humanoid", "ted_gesture"), ("ue5_mannequin", "ted_gesture"),
                 ("bvh_ted", "ted_gesture"), ("unity_humanoid", "ted_expressive"),
                 ("bvh_ted_expressive", "ted_expressive")]


def poses_for(skeleton: str, rng: np.random.Generator) -> list[np.ndarray]:
    n_bones = get_skeleton(skeleton).n_bones
    poses = [random_unit_pose(rng, n_bones) for _ in range(20)]
    if skeleton == "ted_gesture":
        mean = TED_GESTURE.mean_pose()
        poses += [mean] + [perturbed(mean, rng, 0.3) for _ in range(20)]
    return poses


def max_fk_error(rig: Rig, skeleton: str, pose: np.ndarray) -> float:
    quats = retarget(rig, pose, skeleton)
    rotations = world_rotations(rig, quats)
    targets = source_directions(pose, get_skeleton(skeleton), rig.space)
    return max(angle_degrees(rotations[d.bone].apply(d.rest_direction), targets[d.source])
               for d in rig.drives_for(skeleton))


@pytest.mark.parametrize("rig_name,skeleton", RIG_SKELETONS)
def test_bridges_forward_kinematics_reproduces_directions(rig_name, skeleton):
    rig = load_rig(rig_name)
    rng = np.random.default_rng(1)
    errors = [max_fk_error(rig, skeleton, pose) for pose in poses_for(skeleton, rng)]
    assert max(errors) < 0.5


def test_bridges_bone_positions_follow_directions():
    # Positions alone (offsets composed by scipy) must point each arm bone along its source bone.
    rig = load_rig("unity_humanoid")
    rng = np.random.default_rng(2)
    pairs = {"LeftUpperArm": ("LeftLowerArm", 4), "LeftLowerArm": ("LeftHand", 5),
             "RightUpperArm": ("RightLowerArm", 7), "RightLowerArm": ("RightHand", 8), "Spine": ("Neck", 0)}
    index = {name: i for i, name in enumerate(rig.bone_names)}
    for _ in range(10):
        pose = perturbed(TED_GESTURE.mean_pose(), rng, 0.4)
        positions = world_positions(rig, retarget(rig, pose))
        ted = pose.reshape(-1, 3)
        for bone, (child, source) in pairs.items():
            unity_dir = ted[source] * [1, -1, 1]
            assert angle_degrees(positions[index[child]] - positions[index[bone]], unity_dir) < 0.5


def test_bridges_rotations_are_unit_and_rest_is_identity_at_rest_directions():
    rig = load_rig("unity_humanoid")
    quats = retarget(rig, TED_GESTURE.mean_pose())
    np.testing.assert_allclose(np.linalg.norm(quats, axis=-1), 1.0, atol=1e-9)
    undriven = [i for i in range(len(rig.bones)) if i not in {d.bone for d in rig.drives_for("ted_gesture")}]
    np.testing.assert_allclose(quats[undriven], np.tile([0, 0, 0, 1.0], (len(undriven), 1)))


def test_bridges_rest_directions_give_rest_pose():
    # Feeding the rig's own rest directions (converted to TED space) must give identity everywhere.
    rig = load_rig("bvh_ted")
    to_ted = SPACES["bvh"][0].T
    pose = np.zeros((9, 3))
    for drive in rig.drives_for("ted_gesture"):
        pose[drive.source] = to_ted @ drive.rest_direction
    quats = retarget(rig, pose.reshape(-1))
    np.testing.assert_allclose(np.abs(quats[:, 3]), 1.0, atol=1e-9)


def test_bridges_handedness_left_arm_raised():
    rig = load_rig("unity_humanoid")
    index = {name: i for i, name in enumerate(rig.bone_names)}
    pose = TED_GESTURE.mean_pose().reshape(-1, 3).copy()
    pose[4] = [0.0, -1.0, 0.0]  # left upper arm points up (TED up is -y)
    pose[5] = [-1.0, 0.0, 0.0]  # left forearm points to the subject's left (TED left is -x)
    positions = world_positions(rig, retarget(rig, pose.reshape(-1)))
    shoulder, elbow, hand = (positions[index[n]] for n in ("LeftUpperArm", "LeftLowerArm", "LeftHand"))
    assert elbow[1] - shoulder[1] > 0.25  # up is +Y in Unity
    assert hand[0] - elbow[0] < -0.2  # the avatar's left is -X in Unity
    # The rotation itself: a T-pose arm swung straight up turns about +Z (forward) by +90 degrees
    # in Unity's algebra: rest (-1, 0, 0) -> (0, 1, 0).
    upper = Rotation.from_quat(retarget(rig, pose.reshape(-1))[index["LeftUpperArm"]])
    shoulder_world = world_rotations(rig, retarget(rig, pose.reshape(-1)))[index["LeftShoulder"]]
    np.testing.assert_allclose((shoulder_world * upper).apply([-1, 0, 0]), [0, 1, 0], atol=1e-9)


def test_bridges_zero_direction_keeps_rest_and_nan_is_rejected():
    rig = load_rig("unity_humanoid")
    pose = TED_GESTURE.mean_pose().copy()
    pose[12:15] = 0.0  # left upper arm unknown
    quats = retarget(rig, pose)
    np.testing.assert_allclose(quats[rig.bone_names.index("LeftUpperArm")], [0, 0, 0, 1])
    pose[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retarget(rig, pose)
    with pytest.raises(ValueError, match="skeleton"):
        retarget(rig, np.zeros(12))


def test_bridges_opposite_direction_is_a_half_turn():
    # Left collar at rest (pointing to the subject's left), left upper arm pointing exactly the
    # other way: the swing's axis is not unique, the result must still be exact.
    rig = load_rig("bvh_ted")
    pose = np.tile([0.0, -1.0, 0.0], 9)
    pose[9:12] = [-1.0, 0.0, 0.0]  # TED's left is -x
    pose[12:15] = [1.0, 0.0, 0.0]
    quats = retarget(rig, pose)
    assert abs(quats[rig.bone_names.index("LeftArm"), 3]) < 1e-9  # a half turn (the upper arm's joint)
    assert max_fk_error(rig, "ted_gesture", pose) < 0.5


def test_bridges_sequence_has_no_sign_flips():
    rig = load_rig("unity_humanoid")
    rng = np.random.default_rng(3)
    pose = TED_GESTURE.mean_pose()
    retargeter = Retargeter(rig)
    previous = None
    for _ in range(300):
        pose = perturbed(pose, rng, 0.08)  # a random walk through many arm configurations
        quats = retargeter(pose)
        if previous is not None:
            assert np.all(np.sum(quats * previous, axis=-1) >= 0.0)
        previous = quats


def test_bridges_hemisphere_continuity_flips_only_signs():
    rng = np.random.default_rng(4)
    walk = Rotation.from_rotvec(np.cumsum(rng.normal(scale=0.05, size=(200, 3)), axis=0)).as_quat()
    scrambled = walk * rng.choice([-1.0, 1.0], size=(200, 1))
    fixed = make_sequence_continuous(scrambled)
    assert np.all(np.sum(fixed[1:] * fixed[:-1], axis=-1) > 0)
    np.testing.assert_allclose(np.abs(np.sum(fixed * walk, axis=-1)), 1.0, atol=1e-9)  # same rotations
    np.testing.assert_allclose(continue_hemisphere(-walk[1], walk[0]), walk[1])


SPACE_NAMES = sorted(SPACES)


@pytest.mark.parametrize("source", SPACE_NAMES)
@pytest.mark.parametrize("target", SPACE_NAMES)
def test_bridges_space_round_trip_and_consistency(source, target):
    rng = np.random.default_rng(5)
    positions = rng.normal(size=(50, 3))
    quats = Rotation.random(50, random_state=6).as_quat()
    p2, q2 = convert_space(positions, quats, source, target)
    p3, q3 = convert_space(p2, q2, target, source)
    np.testing.assert_allclose(p3, positions, atol=1e-12)
    np.testing.assert_allclose(q3, quats, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(q2, axis=-1), 1.0, atol=1e-12)
    # A rotated point converts to the converted rotation applied to the converted point.
    rotated, _ = convert_space(Rotation.from_quat(quats).apply(positions), quats, source, target)
    np.testing.assert_allclose(Rotation.from_quat(q2).apply(p2), rotated, atol=1e-9)


def test_bridges_space_documented_rules():
    p, q = np.array([0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.3, 0.9])
    # VRM 0.x files (the figure facing -Z): Unity mirrored in z; from TED (x, -y, -z).
    gp, gq = convert_space(p, q, "unity", "vrm0")
    np.testing.assert_allclose(gp, [0.1, 0.2, -0.3])
    np.testing.assert_allclose(gq, [-0.1, -0.2, 0.3, 0.9])
    np.testing.assert_allclose(convert_points(p, "ted", "vrm0"), [0.1, -0.2, -0.3])
    up, uq = convert_space(p, q, "unity", "unreal")
    np.testing.assert_allclose(up, [30.0, 10.0, 20.0])  # X forward, Y right, Z up, centimetres
    np.testing.assert_allclose(uq, [0.3, 0.1, 0.2, 0.9])
    # VRM 1.0 (the WebSocket JSON stream): Unity mirrored in x; from TED (-x, -y, z).
    vp, vq = convert_space(p, q, "unity", "vrm")
    np.testing.assert_allclose(vp, [-0.1, 0.2, 0.3])
    np.testing.assert_allclose(vq, [0.1, -0.2, -0.3, 0.9])
    np.testing.assert_allclose(convert_points(p, "ted", "vrm"), [-0.1, -0.2, 0.3])
    np.testing.assert_allclose(convert_rotations(q, "unity", "vrm"), vq)
    # glTF 2.0's own rule (a figure faces +Z, its left hand at +X) is VRM 1.0's: one frame.
    np.testing.assert_allclose(convert_points(p, "ted", "gltf"), convert_points(p, "ted", "vrm"))
    np.testing.assert_allclose(convert_rotations(q, "unity", "gltf"), vq)
    with pytest.raises(ValueError, match="unknown space"):
        convert_space(p, q, "unity", "maya")


# A change of axes written out by hand: a diagonal matrix, or a vector of three or four +-1s with a -1.
AXIS_FLIP = re.compile(r"np\.diag\(|\[\s*(?=[^\]]*-)[-+]?1(?:\.0*)?(?:\s*,\s*[-+]?1(?:\.0*)?){2,3}\s*\]")


def test_bridges_axis_changes_only_in_retarget():
    bridges = Path(__file__).resolve().parents[2] / "bridges"
    assert AXIS_FLIP.search("np.array([1.0, -1.0, -1.0, 1.0])") and AXIS_FLIP.search("np.diag([-1.0, 1.0, 1.0])")
    assert not AXIS_FLIP.search("[1.0, 1.0, 1.0]") and not AXIS_FLIP.search("[0.0, -1.0, 0.0]")
    offenders = [f"{path.name}:{number}: {line.strip()}"
                 for path in sorted(bridges.glob("*.py")) if path.name != "retarget.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1) if AXIS_FLIP.search(line)]
    assert offenders == [], "convert with retarget.convert_points / convert_rotations and a space from SPACES"


def test_bridges_retarget_is_the_same_in_every_space():
    # The unity rig re-expressed in Unreal axes must produce the Unreal expression of the unity result.
    unity = load_rig("unity_humanoid")
    bones = tuple(RigBone(b.name, b.parent, convert_space(b.offset, [0, 0, 0, 1.0], "unity", "unreal")[0], None)
                  for b in unity.bones)
    drives = {k: tuple(type(d)(d.bone, d.source, SPACES["unreal"][0] @ SPACES["unity"][0].T @ d.rest_direction)
                       for d in v) for k, v in unity.drives.items()}
    unreal = Rig("unity_in_unreal", "unreal", "", bones, drives)
    rng = np.random.default_rng(7)
    for pose in poses_for("ted_gesture", rng)[:10]:
        _, expected = convert_space(np.zeros(3), retarget(unity, pose), "unity", "unreal")
        np.testing.assert_allclose(retarget(unreal, pose), expected, atol=1e-9)


def test_bridges_expressive_drives_fingers():
    rig = load_rig("unity_humanoid")
    driven = {rig.bone_names[d.bone] for d in rig.drives_for("ted_expressive")}
    assert {"LeftIndexProximal", "RightLittleIntermediate", "LeftHand"} <= driven
    assert TED_EXPRESSIVE.n_bones == 42


BASE_RIG = {"name": "r", "space": "unity", "bones": [{"name": "A", "offset": [0, 1, 0]},
                                                     {"name": "B", "parent": "A", "offset": [0, 1, 0]}]}


@pytest.mark.parametrize("change,message", [
    ({"colour": "red"}, "unknown key"),
    ({"space": "maya"}, "space 'maya' unknown"),
    ({"bones": [{"name": "A", "offset": [0, 1, 0]}, {"name": "B", "parent": "Z", "offset": [0, 1, 0]}]}, "listed before"),
    ({"bones": [{"name": "A", "offset": [0, 1]}]}, "three finite numbers"),
    ({"drives": {"ted_gesture": {"A": {"source": ["spine", "hip"], "to": "B"}}}}, "not a bone of ted_gesture"),
    ({"drives": {"ted_gesture": {"B": {"source": ["spine", "neck"], "to": "A"}}}}, "not a descendant"),
    ({"drives": {"ted_gesture": {"A": {"source": ["spine", "neck"], "aim": "B"}}}}, "unknown key"),
    ({"drives": {"klingon": {}}}, "unknown skeleton"),
])
def test_bridges_rig_validation_names_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        parse_rig({**BASE_RIG, **change})


def test_bridges_unknown_rig_and_missing_drives():
    with pytest.raises(ValueError, match="choose one of"):
        load_rig("no_such_rig")
    with pytest.raises(ValueError, match="no drives for skeleton 'ted_expressive'"):
        Retargeter("bvh_ted", "ted_expressive")
