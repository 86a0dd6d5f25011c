"""BEAT2 takes (SMPL-X motion npz + wav [+ TextGrid]) -> a hop-clips corpus with its splits.

Command line (``hop-convert-beat2``, or ``python -m hop.training.data.beat2``)::

    hop-convert-beat2 SOURCE TARGET [--skeleton expressive|ted_gesture] [--split-file FILE]
                      [--speakers 2,4] [--include-additional]

SOURCE is the release's language folder (``beat_english_v2.0.0``: ``smplxflame_30/*.npz``,
``wave16k/*.wav``, ``textgrid/*.TextGrid``, ``train_test_split.csv``) or a folder with the
three files of each take side by side (as ``../shared/data/beat2``). A take is its id,
``<speaker number>_<name>_<...>`` (``2_scott_0_1_1``); it becomes one clip, the span that
both motion and audio cover, at 15 fps; the clip's speaker is the name (``scott``).

* ``--skeleton``: ``expressive`` (default; TED Expressive with fingers, 126 numbers a frame,
  through ``expressive.read_expressive`` and the ``smplx`` joint map) or ``ted_gesture``
  (the 10-joint TED skeleton, 27 numbers, ``smplx_to_ted`` below).
* ``--split-file``: the release's ``train_test_split.csv`` (header ``id,type``, type train /
  val / test / additional) or a clip index .json (a list of {video_id, mode, ...}, as
  ``beat2_s20_l128_speaker2.json``); by default the ``train_test_split.csv`` in SOURCE (or
  beside its ``smplxflame_30``) if there is one. Each clip's manifest ``source["split"]`` is
  its take's split (what ``hop-train``'s data.train_split / data.val_split select).
  ``additional`` takes are left out unless ``--include-additional`` (then they are train).
  Takes under SOURCE that the split file does not list are reported and left out; listed
  takes whose .npz or .wav is missing are reported. Without any split file every take is
  converted and no split is recorded.
* ``--speakers``: only these speaker numbers (the id's first field).

Takes without a TextGrid are converted without words (counted in the summary). With
splits, the TED Expressive corpus's mean pose is the train split's mean.

``smplx_to_ted``: the SMPL-X model (and so each speaker's joint offsets) is licence-gated;
only bone DIRECTIONS matter, so forward kinematics runs the recorded rotations on a
generic adult rest skeleton (metres, y-up, T-pose, the subject's left +x, facing +z).
TED joint <- SMPL-X joint: spine <- spine2, neck <- neck, shoulders/elbows/wrists <- the
same joints; nose and head top are points fixed in the head's frame.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hop.engine.audio_file import load_audio_16k_mono
from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE
from hop.training.data.clips import POSE_FPS, SAMPLE_RATE, Clip, ClipWriter, make_clip, rewrite_manifest
from hop.training.data.expressive import JointMap, load_joint_map, read_expressive
from hop.training.data.retarget import ted_dir_vec
from hop.training.data.textgrid import read_words
from hop.training.data.windows import resample_frames

SKELETONS = {"expressive": TED_EXPRESSIVE, "ted_gesture": TED_GESTURE}
SPLIT_TYPES = ("train", "val", "test", "additional")
MOTION_FOLDER = "smplxflame_30"
SPLIT_CSV = "train_test_split.csv"

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


class ConvertError(ValueError):
    """Something the user fixes (a wrong folder, split file or speaker list): exit status 2."""


def take_dir_vec(npz_path: str | Path, skeleton: str = "expressive", joint_map: JointMap | None = None) -> np.ndarray:
    """A take's motion at 15 fps: (frames, 126) TED Expressive or (frames, 27) TED Gesture directions."""
    if skeleton == "expressive":
        return read_expressive(npz_path, joint_map or "smplx", fps=POSE_FPS).dir_vec
    if skeleton != "ted_gesture":
        raise ValueError(f"skeleton must be one of {sorted(SKELETONS)}, not {skeleton!r}")
    with np.load(npz_path, allow_pickle=False) as take:
        poses = take["poses"]
        fps = float(take["mocap_frame_rate"])
    dir_vec = resample_frames(smplx_to_ted(poses), src_fps=fps, dst_fps=POSE_FPS)
    dir_vec = dir_vec.reshape(len(dir_vec), 9, 3)
    return (dir_vec / np.linalg.norm(dir_vec, axis=-1, keepdims=True)).reshape(len(dir_vec), 27)


def convert_take(npz_path: str | Path, wav_path: str | Path, textgrid_path: str | Path | None = None,
                 skeleton: str = "expressive", joint_map: JointMap | None = None) -> Clip:
    """One BEAT2 take -> one clip at 15 fps, cut to the span both motion and audio cover
    (no TextGrid: no words)."""
    dir_vec = take_dir_vec(npz_path, skeleton, joint_map)
    audio = load_audio_16k_mono(wav_path)
    n_frames = min(len(dir_vec), audio.size * POSE_FPS // SAMPLE_RATE)
    duration = n_frames / POSE_FPS
    words = read_words(textgrid_path) if textgrid_path is not None else []
    words = [(w, s, min(e, duration)) for w, s, e in words if s < duration]
    n_samples = -(-n_frames * SAMPLE_RATE // POSE_FPS)  # whole frames: n_frames == n_samples * fps // rate
    return make_clip(dir_vec[:n_frames], audio[:n_samples], words)


# --- takes, split files, speakers --------------------------------------------------------

@dataclass(frozen=True)
class Take:
    id: str
    npz: Path | None
    wav: Path | None
    textgrid: Path | None

    @property
    def speaker(self) -> str:
        """The name in the id (``scott``), else the id."""
        parts = self.id.split("_")
        return parts[1] if len(parts) > 1 else self.id


def speaker_number(take_id: str) -> int | None:
    first = take_id.split("_")[0]
    return int(first) if first.isdigit() else None


def find_takes(source: Path) -> dict[str, Take]:
    """Every motion file under ``source`` (in ``smplxflame_30`` folders when there are any) with
    its .wav and .TextGrid, beside it or in the release's sibling folders; by take id."""
    npzs = sorted(p for folder in source.rglob(MOTION_FOLDER) if folder.is_dir() for p in folder.glob("*.npz"))
    if not npzs:
        npzs = sorted(source.rglob("*.npz"))
    takes: dict[str, Take] = {}
    for npz in npzs:
        if npz.stem in takes:
            raise ConvertError(f"take {npz.stem} is under {source} twice ({takes[npz.stem].npz} and {npz}); "
                               "point SOURCE at one language folder of the release")
        takes[npz.stem] = Take(npz.stem, npz, _companion(npz, ".wav", "wave16k"),
                               _companion(npz, ".TextGrid", "textgrid"))
    return takes


def _companion(npz: Path, suffix: str, folder: str) -> Path | None:
    """The take's .wav/.TextGrid beside the npz or in the published sibling folder."""
    for path in (npz.with_suffix(suffix), npz.parent.parent / folder / (npz.stem + suffix)):
        if path.is_file():
            return path
    return None


def default_split_file(source: Path) -> Path | None:
    """The release's train_test_split.csv in ``source`` or beside its smplxflame_30 folder."""
    candidates = [source / SPLIT_CSV] + [folder.parent / SPLIT_CSV for folder in source.rglob(MOTION_FOLDER)]
    found = sorted({p.resolve() for p in candidates if p.is_file()})
    if len(found) > 1:
        raise ConvertError(f"{len(found)} {SPLIT_CSV} files under {source}: point SOURCE at one language folder "
                           "or name one with --split-file")
    return found[0] if found else None


def read_split_file(path: str | Path) -> dict[str, str]:
    """take id -> train / val / test / additional, from a train_test_split.csv or a clip index .json."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"split file {path} not found")
    fix = (f"give the release's {SPLIT_CSV} (header id,type) or a clip index .json "
           "(a list of {video_id, mode, ...} like beat2_s20_l128_speaker2.json)")
    split: dict[str, str] = {}

    def put(take_id, kind, where):
        take_id, kind = str(take_id).strip(), str(kind).strip()
        if kind not in SPLIT_TYPES:
            raise ConvertError(f"{path}: {where}: type {kind!r} is not one of {', '.join(SPLIT_TYPES)}")
        if split.setdefault(take_id, kind) != kind:
            raise ConvertError(f"{path}: take {take_id} is both {split[take_id]} and {kind}")

    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"id", "type"} <= {(n or "").strip() for n in reader.fieldnames or []}:
                raise ConvertError(f"{path}: unknown split-file format (header {reader.fieldnames}); {fix}")
            for row_number, row in enumerate(reader, 2):
                row = {(k or "").strip(): v for k, v in row.items()}
                put(row["id"], row["type"], f"line {row_number}")
    elif path.suffix.lower() == ".json":
        try:
            entries = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConvertError(f"{path}: unknown split-file format (not JSON: {err}); {fix}") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "video_id" in e and "mode" in e
                                                    for e in entries):
            raise ConvertError(f"{path}: unknown split-file format (not a list of video_id/mode entries); {fix}")
        for k, entry in enumerate(entries):
            put(entry["video_id"], entry["mode"], f"entry {k}")
    else:
        raise ConvertError(f"{path}: unknown split-file format (suffix {path.suffix!r}); {fix}")
    if not split:
        raise ConvertError(f"{path} lists no take; {fix}")
    return split


def parse_speakers(text: str) -> set[int]:
    try:
        speakers = {int(s) for s in text.split(",") if s.strip()}
    except ValueError:
        raise ConvertError(f"--speakers takes speaker numbers separated by commas (2,4), not {text!r}") from None
    if not speakers:
        raise ConvertError("--speakers names no speaker number")
    return speakers


def _some(ids, limit: int = 10) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# --- the converter -----------------------------------------------------------------------

@dataclass
class Conversion:
    clips: dict[str, str] = field(default_factory=dict)  # clip id -> split ("" without a split file)
    no_words: list[str] = field(default_factory=list)  # converted without a TextGrid
    missing: dict[str, str] = field(default_factory=dict)  # listed take -> what is missing
    unlisted: list[str] = field(default_factory=list)  # under SOURCE, not in the split file: left out
    additional: list[str] = field(default_factory=list)  # type additional, left out
    split_file: Path | None = None

    def summary(self, target: Path) -> str:
        counts = Counter(self.clips.values())
        splits = ", ".join(f"{s} {counts[s]}" for s in ("train", "val", "test") if counts[s]) or "no split recorded"
        n = len(self.clips)
        return (f"{target}: {n} clip{'' if n == 1 else 's'} ({splits}), "
                f"{len(self.no_words)} without a TextGrid (no words)")


def convert_folder(source: str | Path, target: str | Path, split_file: str | Path | None = None,
                   speakers: set[int] | None = None, include_additional: bool = False,
                   skeleton: str = "expressive", log=print) -> Conversion:
    """The takes of ``source`` (those the split file lists, of ``speakers``) -> a corpus at ``target``."""
    source, target = Path(source), Path(target)
    if skeleton not in SKELETONS:
        raise ConvertError(f"--skeleton must be one of {', '.join(SKELETONS)}, not {skeleton!r}")
    found = find_takes(source) if source.is_dir() else {}
    if not found:
        raise ConvertError(f"no BEAT2 take (.npz motion) under {source}: point SOURCE at the release's "
                           f"language folder (beat_english_v2.0.0, with {MOTION_FOLDER}/ and wave16k/)")
    result = Conversion(split_file=Path(split_file) if split_file else default_split_file(source))
    if result.split_file is not None:
        listed = read_split_file(result.split_file)
        what = f"split file {result.split_file}"
    else:
        listed = {take_id: "" for take_id in found}
        what = f"folder {source}"
    if speakers:
        listed = {t: kind for t, kind in listed.items() if speaker_number(t) in speakers}
        found = {t: take for t, take in found.items() if speaker_number(t) in speakers}
        if not listed:
            raise ConvertError(f"no take of speaker(s) {','.join(map(str, sorted(speakers)))} in {what}; "
                               "--speakers takes the numbers that start the take ids (2 for 2_scott_0_1_1)")
    if not include_additional:
        result.additional = sorted(t for t, kind in listed.items() if kind == "additional")
        listed = {t: kind for t, kind in listed.items() if kind != "additional"}
    result.unlisted = sorted(set(found) - set(listed) - set(result.additional))
    for take_id in sorted(listed):
        take = found.get(take_id)
        if take is None or take.wav is None:
            result.missing[take_id] = "no .npz" if take is None else "no .wav"
    todo = [found[t] for t in sorted(listed) if t not in result.missing]
    if result.unlisted:
        log(f"hop-convert-beat2: {len(result.unlisted)} take(s) under {source} not in {result.split_file}, "
            f"left out: {_some(result.unlisted)}")
    if result.missing:
        log(f"hop-convert-beat2: {len(result.missing)} take(s) in {what} lack files, left out: "
            + _some(f"{t} ({why})" for t, why in result.missing.items()))
    if result.additional:
        log(f"hop-convert-beat2: {len(result.additional)} take(s) of type additional left out "
            "(--include-additional trains on them)")
    if not todo:
        raise ConvertError(f"none of the takes in {what} has its .npz and .wav under {source}")

    joint_map = load_joint_map("smplx") if skeleton == "expressive" else None
    skel = SKELETONS[skeleton]
    train_sum, train_frames = np.zeros(skel.pose_dim), 0
    with ClipWriter(target, skeleton=skel.name, description=f"BEAT2 takes from {source}") as writer:
        for take in todo:
            kind = listed[take.id]
            split = "train" if kind == "additional" else kind
            clip = convert_take(take.npz, take.wav, take.textgrid, skeleton, joint_map)
            source_info = {"take": take.npz.name, "wav": take.wav.name,
                           "textgrid": take.textgrid.name if take.textgrid else None,
                           "speaker_number": speaker_number(take.id)}
            if kind:
                source_info.update(split=split, beat2_type=kind)
            writer.add(take.id, clip, take.speaker, source_info)
            result.clips[take.id] = split
            if take.textgrid is None:
                result.no_words.append(take.id)
            if split == "train":
                train_sum += clip.dir_vec.sum(axis=0)
                train_frames += clip.n_frames
            log(f"{take.id}: {split or 'no split'}, {clip.n_frames} frames, "
                + (f"{len(clip.word_text)} words" if take.textgrid else "no TextGrid (no words)"))
    if skel.mean_dir_vec is None and train_frames:
        rewrite_manifest(target, fps=POSE_FPS, mean=train_sum / train_frames)  # the train split's mean pose
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hop-convert-beat2",
                                     description="Convert BEAT2 takes (SMPL-X npz + wav + TextGrid) to a hop-clips "
                                                 "corpus with the release's train/val/test split")
    parser.add_argument("source", type=Path, help="the release's language folder (beat_english_v2.0.0) "
                                                  "or a folder of takes side by side")
    parser.add_argument("target", type=Path, help="the corpus folder to write")
    parser.add_argument("--skeleton", choices=list(SKELETONS), default="expressive",
                        help="expressive: TED Expressive with fingers (default); ted_gesture: 10 joints")
    parser.add_argument("--split-file", type=Path, help=f"{SPLIT_CSV} (id,type) or a clip index .json "
                                                        f"(default: SOURCE's {SPLIT_CSV} if any)")
    parser.add_argument("--speakers", help="only these speaker numbers, e.g. 2,4 (a take id's first field)")
    parser.add_argument("--include-additional", action="store_true",
                        help="convert the split file's 'additional' takes too, as train")
    args = parser.parse_args(argv)
    try:
        speakers = parse_speakers(args.speakers) if args.speakers is not None else None
        result = convert_folder(args.source, args.target, args.split_file, speakers, args.include_additional,
                                args.skeleton)
    except ConvertError as err:
        print(f"hop-convert-beat2: {err}", file=sys.stderr)
        return 2
    print(result.summary(args.target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
