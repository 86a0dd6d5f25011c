import pytest
import torch

from hop.model import CheckpointError, Hop, HopConfig, HopStream, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def saved(default_lm, tmp_path_factory):
    model = Hop(HopConfig(n_prototypes=32), lm=default_lm).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, train_args={"epochs": 1}, metrics={"fgd": 1.0})
    return model, path


def test_round_trip_restores_identical_outputs(saved, default_lm):
    model, path = saved
    loaded, payload = load_checkpoint(path, lm=default_lm)
    assert payload["metrics"] == {"fgd": 1.0} and payload["config"]["skeleton"] == "ted_gesture"
    audio = torch.randn(16000).numpy() * 0.1
    a, b = HopStream(model).push_audio(audio), HopStream(loaded).push_audio(audio)
    assert (a == b).all()


def test_truncated_checkpoint_is_reported(saved, tmp_path):
    _, path = saved
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(broken)


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*--checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


def test_mismatched_skeleton_and_lm_are_refused(saved, default_lm, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="skeleton 'ted_gesture', not 'ted_expressive'"):
        load_checkpoint(path, lm=default_lm, skeleton="ted_expressive")
    payload = torch.load(path, weights_only=True)
    payload["lm"]["fingerprint"] = "0000000000000000"
    other = tmp_path / "other_lm.pt"
    torch.save(payload, other)
    with pytest.raises(CheckpointError, match="trained with language model"):
        load_checkpoint(other, lm=default_lm)


def test_inference_only_checkpoint_is_small_and_equivalent(default_lm, tmp_path):
    model = Hop(HopConfig(), lm=default_lm).eval()  # the default V' = 1000 prototypes
    full, baked = tmp_path / "full.pt", tmp_path / "baked.pt"
    save_checkpoint(full, model)
    save_checkpoint(baked, model, inference_only=True)
    # the V x V' compression dominates the full file; the baked one keeps only V' rows
    assert baked.stat().st_size < full.stat().st_size / 10
    loaded, payload = load_checkpoint(baked, lm=default_lm)
    assert payload["inference_only"] and loaded.reprogram.baked
    audio = torch.randn(16000).numpy() * 0.1
    a, b = HopStream(model).push_audio(audio), HopStream(loaded).push_audio(audio)
    assert abs(a - b).max() < 1e-5
    with pytest.raises(CheckpointError, match="inference-only.*full checkpoint"):
        load_checkpoint(baked, lm=default_lm, for_training=True)
