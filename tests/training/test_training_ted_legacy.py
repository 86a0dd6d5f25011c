"""The legacy TED lmdb route, on fixtures written by pyarrow 11's own ``pyarrow.serialize``.

The isolated pyarrow-11 environment is built once per machine (about 10 s from PyPI)
and cached in HOP_CACHE_DIR / ~/.cache/hop-live, so later runs reuse it.
"""

from __future__ import annotations

import subprocess
import textwrap

import lmdb
import numpy as np
import pytest

from hop.model.skeleton import TED_GESTURE
from hop.training.data import legacy_bridge
from hop.training.data.clips import read_clip, read_manifest
from hop.training.data.ted_legacy import convert_lmdb, legacy_python

pytestmark = pytest.mark.slow

# Runs inside the pyarrow-11 environment: decode the record handed over, serialise it
# with the legacy serializer, print the bytes' length and write them out.
_SERIALIZE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import pyarrow, legacy_bridge
    record = legacy_bridge.decode(open(sys.argv[2], "rb").read())
    open(sys.argv[3], "wb").write(pyarrow.serialize(record).to_buffer().to_pybytes())
""")


@pytest.fixture(scope="session")
def pyarrow11(tmp_path_factory):
    try:
        return legacy_python()
    except RuntimeError as error:
        pytest.skip(f"cannot build the pyarrow 11 environment here: {error}")


def legacy_serialize(python, record, workdir) -> bytes:
    src, dst = workdir / "record.npz", workdir / "record.bin"
    src.write_bytes(legacy_bridge.encode(record))
    subprocess.run([str(python), "-c", _SERIALIZE, str(legacy_bridge.__file__).rsplit("/", 1)[0], str(src), str(dst)],
                   check=True)
    return dst.read_bytes()


def write_lmdb(path, values: list[bytes]) -> None:
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, value in enumerate(values):
            txn.put("{:010}".format(i).encode(), value)
    env.close()


def walking_arms(n_frames: int) -> np.ndarray:
    """TED joints: the mean pose with the left wrist swinging along x, so directions vary."""
    joints = np.repeat(TED_GESTURE.dir_vec_to_joints(TED_GESTURE.mean_pose())[None], n_frames, axis=0)
    joints[:, 6, 0] += 0.1 * np.sin(np.arange(n_frames) / 3.0)
    return joints


def test_raw_lmdb_written_by_pyarrow11_converts_to_clips(pyarrow11, tmp_path):
    rng = np.random.default_rng(0)
    joints = walking_arms(60)  # 60 frames over 4 s: 15 fps already
    audio = rng.standard_normal(4 * 16000).astype(np.float32) * 0.1
    record = {"vid": "abcDEF_123", "clips": [{
        "skeletons_3d": joints, "audio_raw": audio,
        "audio_feat": rng.standard_normal((128, 126)).astype(np.float16),
        "words": [["hello", 10.5, 10.9], ["gesturing", 11.0, 11.6], ["world", 13.9, 14.5]],
        "start_frame_no": 150, "end_frame_no": 210, "start_time": 10.0, "end_time": 14.0}]}
    blob = legacy_serialize(pyarrow11, record, tmp_path)
    assert blob[:1] != b"\x80", "fixture must be pyarrow's format, not a pickle"
    write_lmdb(tmp_path / "lmdb_train", [blob])

    manifest = convert_lmdb(tmp_path / "lmdb_train", tmp_path / "corpus", python=pyarrow11)
    assert read_manifest(tmp_path / "corpus") == manifest
    assert manifest.speakers == ["abcDEF_123"] and len(manifest.clips) == 1
    clip = read_clip(tmp_path / "corpus", manifest.clips[0])
    assert clip.n_frames == 60
    np.testing.assert_allclose(clip.dir_vec, TED_GESTURE.joints_to_dir_vec(joints), atol=1e-6)
    np.testing.assert_array_equal(clip.audio, audio)
    assert clip.word_text == ["hello", "gesturing", "world"]
    np.testing.assert_allclose(clip.word_start, [0.5, 1.0, 3.9])
    np.testing.assert_allclose(clip.word_end, [0.9, 1.6, 4.5])
    assert manifest.clips[0].source["start_frame_no"] == 150


def test_raw_clip_at_another_frame_rate_is_resampled_to_15fps(pyarrow11, tmp_path):
    joints = walking_arms(120)  # 120 frames over 4 s = 30 fps
    record = {"vid": "v", "clips": [{
        "skeletons_3d": joints, "audio_raw": np.zeros(64000, np.float32), "audio_feat": np.zeros((128, 2), np.float16),
        "words": [], "start_frame_no": 0, "end_frame_no": 120, "start_time": 0.0, "end_time": 4.0}]}
    write_lmdb(tmp_path / "raw", [legacy_serialize(pyarrow11, record, tmp_path)])
    manifest = convert_lmdb(tmp_path / "raw", tmp_path / "corpus", python=pyarrow11)
    clip = read_clip(tmp_path / "corpus", manifest.clips[0])
    assert clip.n_frames == 60
    np.testing.assert_allclose(clip.dir_vec, TED_GESTURE.joints_to_dir_vec(joints[::2]), atol=1e-6)


def test_cache_lmdb_written_by_pyarrow11_converts_to_window_clips(pyarrow11, tmp_path):
    values = []
    for i in range(2):
        joints = walking_arms(42)
        dir_vec = TED_GESTURE.joints_to_dir_vec(joints)
        aux = {"vid": f"vid{i}", "start_frame_no": 30, "end_frame_no": 72, "start_time": 2.0, "end_time": 4.8}
        record = [[["so", 2.1, 2.3], ["today", 2.4, 2.9]], joints, dir_vec - TED_GESTURE.mean_pose(),
                  np.full(44800, i, np.float32), np.zeros((128, 88), np.float32), aux]
        values.append(legacy_serialize(pyarrow11, record, tmp_path))
    write_lmdb(tmp_path / "lmdb_train_cache", values)

    manifest = convert_lmdb(tmp_path / "lmdb_train_cache", tmp_path / "corpus", python=pyarrow11)
    assert [c.id for c in manifest.clips] == ["vid0_0000000000", "vid1_0000000001"]
    assert manifest.speakers == ["vid0", "vid1"]
    clip = read_clip(tmp_path / "corpus", manifest.clips[1])
    assert clip.n_frames == 42 and np.all(clip.audio == 1)
    np.testing.assert_allclose(clip.word_start, [0.1, 0.4], atol=1e-9)
    np.testing.assert_allclose(clip.dir_vec, dir_vec, atol=1e-6)


def test_corrupt_record_is_reported_with_pyarrows_reason(pyarrow11, tmp_path):
    write_lmdb(tmp_path / "bad", [b"definitely not pyarrow"])
    with pytest.raises(ValueError, match="pyarrow 11 could not deserialise"):
        convert_lmdb(tmp_path / "bad", tmp_path / "corpus", python=pyarrow11)


def test_missing_lmdb_names_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="lmdb_train"):
        convert_lmdb(tmp_path / "nowhere", tmp_path / "corpus", python=tmp_path / "python")
