"""The real-speech corpus builder (hop-make-corpus) on the real files beside the project."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from hop.training.data.clips import read_clip, read_manifest
from hop.training.data.real_corpus import align_strokes, build, motion_strokes, warp_motion


@pytest.fixture(scope="module")
def real_corpus(shared_data, tmp_path_factory):
    """With the sox augmentation (the session-wide ``real_corpus`` of conftest has none)."""
    out = tmp_path_factory.mktemp("real_corpus_augmented")
    build(out, shared_data, max_lj=3, progress=False)
    return out


def test_no_heldout_frame_in_the_training_split(real_corpus):
    summary = json.loads((real_corpus / "corpus.json").read_text())
    train, held = read_manifest(real_corpus / "train"), read_manifest(real_corpus / "heldout")
    assert {e.source["split"] for e in held.clips} == {"heldout"}
    assert {e.source["split"] for e in train.clips} <= {"train", "val"}
    # by the record: every training clip's motion lies in its take's training part
    for e in train.clips:
        take = summary["takes"][e.source["take"]]
        assert e.source["motion_frames"][1] <= take["train_frames"][1], e.id
        assert take["train_frames"][1] == take["heldout_frames"][0]
        assert take["heldout_frames"][1] - take["heldout_frames"][0] == pytest.approx(0.2 * take["frames"], abs=1)
    # by the data: no held-out pose (exactly or interpolated) and no held-out audio sample run is in train
    train_poses = np.concatenate([read_clip(real_corpus / "train", e).dir_vec for e in train.clips])
    train_audio = np.concatenate([read_clip(real_corpus / "train", e).audio for e in train.clips])
    tree = cKDTree(train_poses)
    for e in held.clips:
        clip = read_clip(real_corpus / "heldout", e)
        assert clip.n_frames > 150
        d, _ = tree.query(clip.dir_vec, p=np.inf)
        assert d.min() > 1e-3, f"{e.id}: a held-out pose appears in the training split"
        for start in range(0, len(clip.audio) - 64, 16000):
            probe = clip.audio[start:start + 64]
            for k in np.flatnonzero(train_audio[:len(train_audio) - 64] == probe[0]):
                assert not np.array_equal(train_audio[k:k + 64], probe), f"{e.id}: held-out audio in train"


def test_manifest_says_what_is_real_and_constructed(real_corpus):
    train = read_manifest(real_corpus / "train")
    kinds = {e.source["kind"] for e in train.clips}
    assert kinds == {"paired", "augmented", "constructed"}
    for e in train.clips:
        assert e.source["audio_real"] is True and e.source["motion_real"] is True
        assert isinstance(e.source["motion_warped"], bool) and e.source["audio_transform"]
        assert e.n_samples == pytest.approx(e.n_frames * 16000 / 15, abs=2)
    held = read_manifest(real_corpus / "heldout")
    assert np.allclose(held.mean_dir_vec, train.mean_dir_vec, atol=1e-6) and held.speakers == train.speakers
    val = [e for e in train.clips if e.source["split"] == "val"]
    assert val and all(e.source["kind"] == "constructed" for e in val)


def test_warped_strokes_land_on_targets():
    fps = 15
    t = np.arange(150) / fps
    rng = np.random.default_rng(0)
    # a motion whose wrists swing with strokes every ~0.8 s
    from hop.model.skeleton import TED_EXPRESSIVE as S

    base = np.tile(_rest(S), (150, 1))
    motion = base.reshape(150, -1, 3).copy()
    swing = np.sin(2 * np.pi * t / 1.6)[:, None]
    motion[:, 4] = motion[:, 4] + 0.8 * swing * np.array([0.0, 0.0, 1.0])
    motion = (motion / np.linalg.norm(motion, axis=-1, keepdims=True)).reshape(150, -1)
    strokes = motion_strokes(motion, fps)
    assert len(strokes) >= 5
    targets = np.sort(rng.uniform(0.5, 6.0, 6))
    anchors = align_strokes(targets, strokes, 6.0)
    warped = warp_motion(motion, fps, anchors, 90)
    new = motion_strokes(warped, fps)
    for out_t, _ in anchors[1:-1]:
        assert np.min(np.abs(new - out_t)) <= 1.5 / fps


def _rest(S):
    joints = np.zeros((S.n_joints, 3))
    for parent, child, length in S.bones:
        name = S.joint_names[child]
        d = np.array([-1.0 if "left" in name else 1.0 if "right" in name else 0.0, 1.0, 0.3])
        joints[child] = joints[parent] + length * d / np.linalg.norm(d)
    return S.joints_to_dir_vec(joints)
