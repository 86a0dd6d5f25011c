"""BEAT2 takes (SMPL-X motion npz + wav + TextGrid) -> hop-clips with the TED skeleton.

The SMPL-X body model (and so each speaker's exact joint offsets) is licence-gated;
only bone DIRECTIONS matter here, so forward kinematics runs the recorded joint
rotations on a generic adult rest skeleton (offsets in metres, y-up, T-pose, the
subject's left +x, facing +z, roughly the SMPL-X neutral body).

TED joint <- SMPL-X joint: spine <- spine2 (the TED spine bone, 0.26, matches
spine2 -> neck), neck <- neck, shoulders/elbows/wrists <- the same SMPL-X joints;
nose and head top are points fixed in the head's frame (SMPL-X has no such joints).

Command line (``hop-convert-beat2``, or ``python -m hop.training.data.beat2``)::

    hop-convert-beat2 BEAT2_FOLDER OUT_CORPUS

converts every take found under BEAT2_FOLDER that has all three files
``<speaker_id>_<name>_<take>.npz|.wav|.TextGrid``, either side by side (as in
``../shared/data/beat2``) or in the published layout (``smplxflame_30/*.npz`` with
``wave16k/*.wav`` and ``textgrid/*.TextGrid`` beside that folder). One take becomes
one clip (the span both motion and audio cover, at 15 fps); the speaker is the
name in the file name (``scott``); windows are cut when the corpus is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hop.engine.audio_file import load_audio_16k_mono
from hop.training.data.clips import POSE_FPS, SAMPLE_RATE, Clip, ClipWriter, make_clip
from hop.training.data.retarget import ted_dir_vec
from hop.training.data.textgrid import read_words
from hop.training.data.windows import resample_frames

# SMPL-X upper-body chain: joint index -> (parent index, rest position in metres)
SMPLX_REST = {
    0: (-1, (0.0, 0.0, 0.0)),  # pelvis
    1: (0, (0.06, -0.09, -0.01)),  # left hip
    2: (0, (-0.06, -0.09, -0.01)),  # right hip
    3: (0, (0.0, 0.11, -0.03)),  # spine1
    6: (3, (0.0, 0.24, -0.02)),  # spine2
    9: (6, (0.0, 0.30, 0.01)),  # spine3
    12: (9, (0.0, 0.51, -0.02)),  # neck
    13: (9, (0.08, 0.42, -0.01)),  # left collar
    14: (9, (-0.08, 0.42, -0.01)),  # right collar
    15: (12, (0.0, 0.58, 0.03)),  # head
    16: (13, (0.18, 0.45, -0.02)),  # left shoulder
    17: (14, (-0.18, 0.45, -0.02)),  # right shoulder
    18: (16, (0.43, 0.43, -0.04)),  # left elbow
    19: (17, (-0.43, 0.43, -0.04)),  # right elbow
    20: (18, (0.69, 0.44, -0.04)),  # left wrist
    21: (19, (-0.69, 0.44, -0.04)),  # right wrist
}
# Nose and head top in the head joint's frame (metres, y-up). SMPL-X has neither; they
# are placed so that a neutral head (identity rotations from the neck up) gives the
# TED Gesture mean pose's two head bones, with TED's bone lengths: neck -> nose
# 0.18 along (0, 0.866, 0.434), nose -> head top 0.14 along (0, 0.876, -0.412).
NOSE_IN_HEAD = np.array([0.0, 0.0858, 0.0282])
HEAD_TOP_IN_HEAD = np.array([0.0, 0.2084, -0.0295])
TED_FROM_SMPLX = {"spine": 6, "neck": 12, "left_shoulder": 16, "left_elbow": 18, "left_wrist": 20,
                  "right_shoulder": 17, "right_elbow": 19, "right_wrist": 21}


def smplx_forward_kinematics(poses: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, Rotation]]:
    """(frames, >=66) axis-angle -> world positions and rotations of the upper-body chain."""
    frames = poses.shape[0]
    positions, rotations = {}, {}
    for joint, (parent, rest) in SMPLX_REST.items():  # listed parents first
        local = Rotation.from_rotvec(poses[:, 3 * joint:3 * joint + 3])
        if parent < 0:
            positions[joint] = np.zeros((frames, 3))
            rotations[joint] = local
            continue
        offset = np.asarray(rest) - np.asarray(SMPLX_REST[parent][1])
        positions[joint] = positions[parent] + rotations[parent].apply(np.tile(offset, (frames, 1)))
        rotations[joint] = rotations[parent] * local
    return positions, rotations


def smplx_to_ted(poses: np.ndarray) -> np.ndarray:
    """(frames, 165) SMPL-X axis-angle -> (frames, 27) TED directions at the same frame rate."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] < 66:
        raise ValueError(f"expected SMPL-X poses (frames, 165) in axis-angle, got {poses.shape}")
    positions, rotations = smplx_forward_kinematics(poses)
    frames = poses.shape[0]
    named = {ted: positions[smplx] for ted, smplx in TED_FROM_SMPLX.items()}
    named["nose"] = positions[15] + rotations[15].apply(np.tile(NOSE_IN_HEAD, (frames, 1)))
    named["head_top"] = positions[15] + rotations[15].apply(np.tile(HEAD_TOP_IN_HEAD, (frames, 1)))
    return ted_dir_vec(named, left_hip=positions[1], right_hip=positions[2])


def convert_take(npz_path: str | Path, wav_path: str | Path, textgrid_path: str | Path) -> Clip:
    """One BEAT2 take -> one clip at 15 fps, cut to the span both motion and audio cover."""
    with np.load(npz_path, allow_pickle=False) as take:
        poses = take["poses"]
        fps = float(take["mocap_frame_rate"])
    dir_vec = resample_frames(smplx_to_ted(poses), src_fps=fps, dst_fps=POSE_FPS)
    audio = load_audio_16k_mono(wav_path)
    n_frames = min(len(dir_vec), audio.size * POSE_FPS // SAMPLE_RATE)
    duration = n_frames / POSE_FPS
    words = [(w, s, min(e, duration)) for w, s, e in read_words(textgrid_path) if s < duration]
    dir_vec = dir_vec[:n_frames].reshape(n_frames, 9, 3)
    dir_vec /= np.linalg.norm(dir_vec, axis=-1, keepdims=True)
    n_samples = -(-n_frames * SAMPLE_RATE // POSE_FPS)  # whole frames: n_frames == n_samples * fps // rate
    return make_clip(dir_vec.reshape(n_frames, 27), audio[:n_samples], words)


def convert_folder(source: str | Path, target: str | Path) -> int:
    """Every take in ``source`` with .npz, .wav and .TextGrid -> a corpus; returns the clip count."""
    source = Path(source)
    takes = [(npz, wav, grid) for npz in sorted(source.rglob("*.npz"))
             if (wav := _companion(npz, ".wav", "wave16k")) and (grid := _companion(npz, ".TextGrid", "textgrid"))]
    if not takes:
        raise FileNotFoundError(f"no BEAT2 take with .npz + .wav + .TextGrid under {source}")
    with ClipWriter(target, description=f"BEAT2 takes from {source}") as writer:
        for npz, wav, grid in takes:
            speaker = npz.stem.split("_")[1] if npz.stem.count("_") >= 1 else npz.stem
            clip = convert_take(npz, wav, grid)
            writer.add(npz.stem, clip, speaker, {"take": npz.name, "wav": wav.name, "textgrid": grid.name})
            print(f"{npz.stem}: {clip.n_frames} frames, {len(clip.word_text)} words")
    return len(takes)


def _companion(npz: Path, suffix: str, folder: str) -> Path | None:
    """The take's .wav/.TextGrid beside the npz or in the published sibling folder."""
    for path in (npz.with_suffix(suffix), npz.parent.parent / folder / (npz.stem + suffix)):
        if path.is_file():
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hop-convert-beat2",
                                     description="Convert BEAT2 takes (SMPL-X npz + wav + TextGrid) to hop-clips "
                                                 "with the TED 10-joint skeleton")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    print(f"{args.target}: {convert_folder(args.source, args.target)} clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
