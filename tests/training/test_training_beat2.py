"""BEAT2 (SMPL-X) -> TED directions: hand-made poses with known answers, and the real take 0_1_1."""

from __future__ import annotations

import numpy as np
import pytest

from hop.model.skeleton import TED_GESTURE
from hop.training.data import beat2
from hop.training.data.clips import POSE_FPS, SAMPLE_RATE, read_clip, read_manifest
from hop.training.data.retarget import face_forward, yup_to_ted
from hop.training.data.textgrid import parse_textgrid, read_words

L_UPPER, L_FORE, R_UPPER, R_FORE = 4, 5, 7, 8


def _bones(dir_vec):
    return np.asarray(dir_vec).reshape(-1, 9, 3)


def _pose(**joint_rotvecs):
    poses = np.zeros((1, 165))
    for joint, rotvec in joint_rotvecs.items():
        j = int(joint[1:])
        poses[0, 3 * j:3 * j + 3] = rotvec
    return poses


def test_zero_pose_is_a_t_pose_with_ted_head():
    b = _bones(beat2.smplx_to_ted(np.zeros((1, 165))))[0]
    # T-pose: arms horizontal, subject's left on TED -x; spine straight up (TED up is -y)
    assert b[L_UPPER] @ [-1, 0, 0] > 0.99 and b[L_FORE] @ [-1, 0, 0] > 0.99
    assert b[R_UPPER] @ [1, 0, 0] > 0.99 and b[R_FORE] @ [1, 0, 0] > 0.99
    assert b[0] @ [0, -1, 0] > 0.99
    # neutral head reproduces the TED mean pose's head bones (how the head points are placed)
    mean = TED_GESTURE.mean_pose().reshape(9, 3)
    for bone in (1, 2):
        assert b[bone] @ (mean[bone] / np.linalg.norm(mean[bone])) > 0.999


def test_shoulder_and_elbow_rotations_move_the_right_bones():
    # left shoulder (SMPL-X 16) turned -90 deg about z: the left arm hangs straight down
    b = _bones(beat2.smplx_to_ted(_pose(j16=[0, 0, -np.pi / 2])))[0]
    assert b[L_UPPER] @ [0, 1, 0] > 0.99 and b[L_FORE] @ [0, 1, 0] > 0.99
    assert b[R_UPPER] @ [1, 0, 0] > 0.99  # the other arm is untouched
    # then the left elbow (18) bent 90 deg about y: the forearm points forward (+z in both spaces)
    b = _bones(beat2.smplx_to_ted(_pose(j16=[0, 0, -np.pi / 2], j18=[0, -np.pi / 2, 0])))[0]
    assert b[L_UPPER] @ [0, 1, 0] > 0.99
    assert b[L_FORE] @ [0, 0, 1] > 0.99


def test_heading_is_removed_but_leaning_is_kept():
    base = _pose(j16=[0, 0, -1.0], j19=[0.3, 0.8, 0.0], j12=[0.2, 0, 0])
    turned = base.copy()
    turned[0, 0:3] = [0, 2.0, 0]  # the whole body turned 115 deg about the vertical
    assert np.allclose(beat2.smplx_to_ted(base), beat2.smplx_to_ted(turned), atol=1e-6)
    leaning = base.copy()
    leaning[0, 0:3] = [0.5, 0, 0]  # pitched forward: must show in the spine
    spine = _bones(beat2.smplx_to_ted(leaning))[0, 0]
    assert spine[2] == pytest.approx(np.sin(0.5), abs=0.05)


def test_face_forward_and_axis_flip_known_values():
    points = np.array([[[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])
    left, right = np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, 0.0, -1.0]])  # hips along +z: facing -x
    out = face_forward(points, left, right)
    assert np.allclose(out, [[[0.0, 2.0, -1.0], [1.0, 0.0, 0.0]]])
    assert np.allclose(yup_to_ted(np.array([1.0, 2.0, 3.0])), [-1.0, -2.0, 3.0])


LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 2.5
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 1.25
            text = ""
        intervals [2]:
            xmin = 1.25
            xmax = 1.5
            text = "say ""42"""
        intervals [3]:
            xmin = 1.5
            xmax = 2.5
            text = "again"
    item [2]:
        class = "TextTier"
        name = "beats"
        xmin = 0
        xmax = 2.5
        points: size = 1
        points [1]:
            number = 0.75
            mark = "b1"
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
2.5
<exists>
1
"IntervalTier"
"words"
0
2.5
2
0
1e0
"one"
1
2.5
"two"
'''


def test_textgrid_long_and_short_formats(tmp_path):
    tiers = parse_textgrid(LONG)
    assert [(i.text, i.start, i.end) for i in tiers["words"].intervals] == [
        ("", 0.0, 1.25), ('say "42"', 1.25, 1.5), ("again", 1.5, 2.5)]
    assert tiers["beats"].kind == "TextTier" and tiers["beats"].intervals[0].start == 0.75
    path = tmp_path / "short.TextGrid"
    path.write_bytes(SHORT.encode("utf-16"))
    assert read_words(path) == [("one", 0.0, 1.0), ("two", 1.0, 2.5)]
    with pytest.raises(ValueError, match="no tier"):
        read_words(path, tier="phones")


def _take(shared_data):
    return shared_data / "beat2" / "2_scott_0_1_1"


def test_beat2_take_lines_up_with_audio_and_words(shared_data):
    base = _take(shared_data)
    clip = beat2.convert_take(base.with_suffix(".npz"), base.with_suffix(".wav"), base.with_suffix(".TextGrid"))
    # 1906 motion frames at 30 fps = 63.53 s; the wav is 64.1 s: the clip is the motion's span
    assert clip.n_frames == 953 and clip.audio.size * POSE_FPS // SAMPLE_RATE == 953
    # clip frame i is source frame 2i (30 -> 15 fps, same start): no time offset
    with np.load(base.with_suffix(".npz")) as take:
        direct = beat2.smplx_to_ted(take["poses"][::2][:953])
    assert np.allclose(clip.dir_vec, direct, atol=1e-5)
    words = read_words(base.with_suffix(".TextGrid"))
    assert clip.words() == [w for w in words if w[1] < 953 / 15]
    assert clip.word_text[:3] == ["the", "first", "thing"] and clip.word_start[0] == pytest.approx(1.42)
    # the words sit on the speech: 10 ms frames inside words are loud, outside mostly not,
    # and shifting the words by 0.5 s in either direction makes the match clearly worse
    hop = SAMPLE_RATE // 100
    n = clip.audio.size // hop
    level = 10 * np.log10(np.mean(clip.audio[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-10)
    loud = level > np.percentile(level, 95) - 30
    centres = (np.arange(n) + 0.5) / 100

    def contrast(shift):
        inside = np.zeros(n, bool)
        for _, s, e in clip.words():
            inside |= (centres >= s + shift) & (centres < e + shift)
        return loud[inside].mean() - loud[~inside].mean()

    assert contrast(0.0) > 0.6
    assert contrast(0.0) > contrast(0.5) + 0.3 and contrast(0.0) > contrast(-0.5) + 0.3


def test_beat2_poses_look_like_a_standing_speaker(shared_data):
    base = _take(shared_data)
    with np.load(base.with_suffix(".npz")) as take:
        joints = TED_GESTURE.dir_vec_to_joints(beat2.smplx_to_ted(take["poses"]))
    up = -joints[..., 1]  # TED up is -y
    assert np.all(up[:, 3] > up[:, 1]) and np.all(up[:, 1] > up[:, 0])  # head top > neck > spine
    assert np.mean(up[:, 6] < up[:, 4]) > 0.9 and np.mean(up[:, 9] < up[:, 7]) > 0.9  # hands mostly low
    assert np.all(joints[:, 4, 0] < joints[:, 7, 0])  # left shoulder on -x: facing the camera
    # a speaker gestures: the wrists move
    assert joints[:, [6, 9]].std(axis=0).max() > 0.03


def test_beat2_folder_conversion_and_render(shared_data, tmp_path):
    from hop.training.render import render_frames

    out = tmp_path / "corpus"
    assert beat2.main([str(shared_data / "beat2"), str(out)]) == 0
    manifest = read_manifest(out)
    assert manifest.speakers == ["scott"] and [c.id for c in manifest.clips] == ["2_scott_0_1_1"]
    clip = read_clip(out, manifest.clips[0])
    png = render_frames(clip.dir_vec, [0, 300, 600], tmp_path / "beat2.png", title="BEAT2 0_1_1")
    assert png.stat().st_size > 5000


def test_take_audio_is_read_scaled_and_resampled_to_16k_mono(tmp_path):
    from hop.engine.audio_file import load_audio_16k_mono

    from scipy.io import wavfile

    pcm = np.full(44100, 16384, dtype=np.int16)  # 1 s at 44.1 kHz, half of full scale
    pcm[:10] = 0
    wavfile.write(tmp_path / "a.wav", 44100, np.stack([pcm, pcm], axis=1))  # stereo
    audio = load_audio_16k_mono(tmp_path / "a.wav")
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    assert audio[8000] == pytest.approx(16384 / 32767, abs=1e-3)
