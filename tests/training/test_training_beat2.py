"""BEAT2 (SMPL-X) -> TED directions: hand-made poses with known answers, the real take 0_1_1, and
hop-convert-beat2 on a small fake release layout (symlinks to the real take) up to hop-train on it."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE
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
    clip = beat2.convert_take(base.with_suffix(".npz"), base.with_suffix(".wav"), base.with_suffix(".TextGrid"),
                              skeleton="ted_gesture")
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
    assert beat2.main([str(shared_data / "beat2"), str(out), "--skeleton", "ted_gesture"]) == 0
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


# --- the release layout: splits, speakers, the expressive skeleton, then training on it ----------

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "training" / "configs" / "beat2_expressive.toml"
SPLIT_CSV = """id,type
2_scott_0_1_1,train
4_lawrence_0_1_1,val
2_scott_0_2_2,test
4_lawrence_0_2_2,additional
"""


@pytest.fixture(scope="module")
def release(shared_data, tmp_path_factory) -> Path:
    """beat_english_v2.0.0 as published, made of the one real take under several ids: 2_scott_0_1_1
    (train), 4_lawrence_0_1_1 (val, no TextGrid), 4_lawrence_0_2_2 (additional), 6_carla_0_1_1 (not in
    the split file) and 2_scott_0_2_2 (test, speech only: its motion is missing)."""
    real = shared_data / "beat2"
    root = tmp_path_factory.mktemp("BEAT2") / "beat_english_v2.0.0"
    for folder in ("smplxflame_30", "wave16k", "textgrid"):
        (root / folder).mkdir(parents=True)
    for take in ("2_scott_0_1_1", "4_lawrence_0_1_1", "4_lawrence_0_2_2", "6_carla_0_1_1"):
        (root / "smplxflame_30" / f"{take}.npz").symlink_to(real / "2_scott_0_1_1.npz")
        (root / "wave16k" / f"{take}.wav").symlink_to(real / "2_scott_0_1_1.wav")
    for take in ("2_scott_0_1_1", "4_lawrence_0_2_2", "6_carla_0_1_1"):
        (root / "textgrid" / f"{take}.TextGrid").symlink_to(real / "2_scott_0_1_1.TextGrid")
    (root / "wave16k" / "2_scott_0_2_2.wav").symlink_to(real / "2_scott_0_2_2.wav")
    (root / "textgrid" / "2_scott_0_2_2.TextGrid").symlink_to(real / "2_scott_0_2_2.TextGrid")
    (root / "train_test_split.csv").write_text(SPLIT_CSV)
    return root


def _convert(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = beat2.main([str(a) for a in argv])
    return status, out.getvalue()


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("beat2_corpus") / "corpus"
    status, printed = _convert([release, out])  # the release's train_test_split.csv, by default
    assert status == 0, printed
    return out, printed


def _splits(corpus: Path) -> dict[str, str]:
    return {c.id: c.source.get("split") for c in read_manifest(corpus).clips}


def test_release_layout_keeps_the_split_and_reports_what_it_leaves_out(converted):
    corpus, printed = converted
    assert _splits(corpus) == {"2_scott_0_1_1": "train", "4_lawrence_0_1_1": "val"}
    manifest = read_manifest(corpus)
    assert manifest.speakers == ["scott", "lawrence"]
    lines = printed.splitlines()
    assert any("not in" in l and "6_carla_0_1_1" in l for l in lines)  # never given a guessed split
    assert any("1 take(s)" in l and "lack files" in l and "2_scott_0_2_2 (no .npz)" in l for l in lines)
    assert any("1 take(s) of type additional left out" in l for l in lines)
    assert lines[-1].endswith("2 clips (train 1, val 1), 1 without a TextGrid (no words)")
    scott, lawrence = (read_clip(corpus, c) for c in manifest.clips)
    assert scott.word_text[:3] == ["the", "first", "thing"] and lawrence.word_text == []


def test_release_clips_are_ted_expressive_with_moving_fingers(converted):
    from hop.training.data.expressive import finger_flexion_deg

    corpus, _ = converted
    manifest = read_manifest(corpus)
    assert manifest.skeleton == TED_EXPRESSIVE.name
    clip = read_clip(corpus, manifest.clips[0])
    assert clip.dir_vec.shape == (953, 126) and clip.audio.size * POSE_FPS // SAMPLE_RATE == 953
    assert np.allclose(np.linalg.norm(clip.dir_vec.reshape(953, 42, 3), axis=-1), 1, atol=1e-4)
    flexion = finger_flexion_deg(clip.dir_vec)
    assert (flexion.max(axis=0) - flexion.min(axis=0)).max() > 10  # degrees: the fingers bend and stretch
    # the mean pose is the train split's (scott's clip), not the val clip's too
    assert np.allclose(manifest.mean_dir_vec, clip.dir_vec.mean(axis=0), atol=1e-5)


def test_speaker_filter_and_additional_takes(release, tmp_path):
    out = tmp_path / "lawrence"
    status, printed = _convert([release, out, "--speakers", "4", "--include-additional"])
    assert status == 0, printed
    assert _splits(out) == {"4_lawrence_0_1_1": "val", "4_lawrence_0_2_2": "train"}
    assert read_manifest(out).speakers == ["lawrence"]
    assert "lack files" not in printed and "not in" not in printed  # scott's and carla's takes are filtered out
    status, printed = _convert([release, tmp_path / "none", "--speakers", "5,9"])
    assert status == 2 and "no take of speaker(s) 5,9" in printed and len(printed.splitlines()) == 1


def test_clip_index_json_as_the_split_file(release, shared_data, tmp_path):
    out = tmp_path / "json"
    index = shared_data / "beat2" / "beat2_s20_l128_speaker2.json"  # 118 takes of speaker 2; 0_1_1 is test
    status, printed = _convert([release, out, "--split-file", index, "--speakers", "2", "--skeleton", "ted_gesture"])
    assert status == 0, printed
    assert _splits(out) == {"2_scott_0_1_1": "test"}
    assert any("117 take(s)" in l and "lack files" in l and "and 107 more" in l for l in printed.splitlines())
    manifest = read_manifest(out)
    assert manifest.skeleton == "ted_gesture" and read_clip(out, manifest.clips[0]).dir_vec.shape == (953, 27)
    assert np.allclose(manifest.mean_dir_vec, TED_GESTURE.mean_pose())  # the published mean, as before


def test_bad_source_split_file_or_speakers_exit_2_with_the_fix(release, tmp_path):
    (tmp_path / "empty").mkdir()
    bad_csv = tmp_path / "split.csv"
    bad_csv.write_text("name,split\n2_scott_0_1_1,train\n")
    bad_type = tmp_path / "types.csv"
    bad_type.write_text("id,type\n2_scott_0_1_1,training\n")
    bad_json = tmp_path / "index.json"
    bad_json.write_text('{"2_scott_0_1_1": "train"}')
    cases = [([tmp_path / "empty"], "no BEAT2 take"),
             ([release, "--split-file", bad_csv], "unknown split-file format"),
             ([release, "--split-file", bad_json], "unknown split-file format"),
             ([release, "--split-file", release / "textgrid" / "2_scott_0_1_1.TextGrid"], "unknown split-file format"),
             ([release, "--split-file", bad_type], "type 'training' is not one of"),
             ([release, "--speakers", "two"], "speaker numbers")]
    for args, message in cases:
        status, printed = _convert([args[0], tmp_path / "out", *args[1:]])
        assert status == 2 and printed.startswith("hop-convert-beat2: ") and message in printed, (args, printed)
        assert len(printed.splitlines()) == 1
    assert not (tmp_path / "out" / "manifest.json").exists()


class _Parser(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parse(main, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the real parser that ``main`` builds (nothing runs)."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Parser(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        main([])
    except _Parser as caught:
        parser = caught.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    return parser.parse_args(argv)


def test_config_header_commands_parse_and_the_model_is_expressive_cpus():
    from torch.distributed.run import get_args_parser

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    commands, line = [], ""
    for raw in CONFIG.read_text().splitlines():
        if not raw.startswith("#"):
            break
        line += raw.lstrip("# ").rstrip("\\ ") + " "
        if not raw.rstrip().endswith("\\"):
            command = re.match(r"(?:hop-[a-z0-9-]+|torchrun) .*", line)  # a line that starts with a command
            if command:
                commands.append(shlex.split(command.group(0)))
            line = ""
    named = set()
    for program, *args in commands:
        if program == "torchrun":
            run = get_args_parser().parse_args(args)
            assert run.module and run.training_script == "hop.training.train", args
            program, args = "hop-train", run.training_script_args
            named.add("torchrun")
        module, function = scripts[program].split(":")
        _parse(getattr(importlib.import_module(module), function), args)
        named.add(program)
    assert named == {"hop-convert-beat2", "hop-train-fgd-ae", "hop-train", "torchrun", "hop-evaluate"}
    ours = tomllib.loads(CONFIG.read_text())
    cpu = tomllib.loads((REPO / "training" / "configs" / "expressive_cpu.toml").read_text())
    assert ours["model"] == cpu["model"]
    assert ours["data"]["train_split"] == "train" and ours["data"]["val_split"] == "val"


def _train_overrides(corpus: Path, out: Path, *extra: str) -> list[str]:
    sets = [f'data.train="{corpus}"', "train.threads=1", "train.batch_size=4", "eval.max_windows=8",
            "eval.max_clips=1", "log.progress=false", "log.tensorboard=false", "log.plots=false", *extra]
    return ["--config", str(CONFIG), "--device", "cpu", "--out", str(out)] + [a for s in sets for a in ("--set", s)]


def test_fgd_ae_and_a_short_training_run_on_the_converted_release(converted, tmp_path, capsys):
    from hop.model.checkpoint import read_checkpoint
    from hop.training import motion_ae, train

    corpus, _ = converted
    ae = tmp_path / "fgd_ae.pt"
    motion_ae.main(["--data", str(corpus), "--split", "train", "--epochs", "1", "--out", str(ae), "--device", "cpu"])
    run = tmp_path / "run"
    assert train.main(_train_overrides(corpus, run, f'eval.fgd_ae="{ae}"', "eval.streaming=false")
                      + ["--max-steps", "3"]) == 0
    printed = capsys.readouterr().out
    # train and val are the clips the manifest says (953 frames each: 92 windows of 34 at stride 10)
    assert "92 train windows, 92 val windows" in printed
    stored = read_checkpoint(run / "last.pt")
    assert stored["trainer"]["global_step"] == 3
    assert stored["config"]["skeleton"] == TED_EXPRESSIVE.name and stored["config"]["causal"]
    assert stored["config"]["n_speakers"] == 2 and (run / "inference.pt").is_file()
    val = (run / "val_log.csv").read_text().splitlines()
    assert len(val) == 2 and float(dict(zip(val[0].split(","), val[1].split(",")))["fgd"]) >= 0


@pytest.mark.slow
def test_torchrun_two_processes_on_the_converted_release(converted, tmp_path):
    """The documented torchrun command (module form), 2 CPU processes (gloo), 2 steps: one checkpoint."""
    import shutil
    import subprocess
    import sys

    from hop.model.checkpoint import read_checkpoint

    corpus, _ = converted
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None, "torchrun is missing from the environment's bin folder"
    run = tmp_path / "ddp"
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "hop.training.train",
                           *_train_overrides(corpus, run, "eval.every_epochs=0", 'eval.fgd_ae=""'), "--max-steps", "2"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch 4 x 2" in done.stdout
    assert read_checkpoint(run / "last.pt")["trainer"]["global_step"] == 2
    assert sorted(p.name for p in run.glob("*.pt")) == ["inference.pt", "last.pt"]
