"""The streaming state: one entry per stateful layer, per-stream reset."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

from hop.model import Hop, HopConfig, HopStream, Stateful, reset_streams
from hop.model.export import flatten_state, state_spec
from hop.model.hop import stream_dims


@pytest.fixture(scope="module")
def model(default_lm):
    torch.manual_seed(0)
    return Hop(HopConfig(n_prototypes=32), lm=default_lm).eval()


def _entries(state, prefix=""):
    """Dotted module path -> the dict of tensors at that path."""
    found = {}
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if tensors:
        found[prefix] = tensors
    for k, v in state.items():
        if isinstance(v, dict):
            found.update(_entries(v, f"{prefix}.{k}" if prefix else k))
    return found


def _speech(seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def test_state_has_one_entry_per_stateful_layer_named_like_the_module(model):
    state = model.initial_state(2)
    stateful = {name: m for name, m in model.named_modules() if isinstance(m, Stateful)}
    entries = _entries(state)
    assert set(entries) == set(stateful)
    assert {"clock", "lm_context", "feedback", "gru"} | {f"graph.layers.{i}" for i in range(5)} <= set(stateful)
    for name, tensors in entries.items():
        assert set(tensors) == set(stateful[name].init_state(2))


def test_a_new_stateful_layer_joins_state_reset_and_export_by_itself(model):
    class Counter(Stateful, nn.Module):
        state_batch_dims = {"count": 1}  # streams along dimension 1

        def init_state(self, batch, device=None):
            return {"count": torch.zeros(3, batch, device=device)}

    before = len(flatten_state(model.initial_state(2)))
    model.graph.counter = Counter()
    try:
        state = model.initial_state(2)
        assert state["graph"]["counter"]["count"].shape == (3, 2)
        assert len(flatten_state(state)) == before + 1
        state["graph"]["counter"]["count"] = torch.ones(3, 2)
        reset = model.reset_state(state, torch.tensor([False, True]))
        assert reset["graph"]["counter"]["count"].tolist() == [[1, 0]] * 3
    finally:
        del model.graph.counter
    assert len(flatten_state(model.initial_state(2))) == before


def test_reset_leaves_other_streams_state_bit_identical(model):
    stream = HopStream(model, batch=3)
    stream.add_tokens(1, {i: 2000 + i for i in range(0, 40, 3)})
    stream.push_audio(np.stack([_speech(1.3, s) for s in range(3)]))
    state = stream.state
    fresh = model.initial_state(3)
    dims = stream_dims(model)
    stream.reset([1])
    after = stream.state
    assert state_spec(after) == state_spec(state)
    flat_dims = {pytree.keystr(p): d for p, d in pytree.tree_flatten_with_path(dims)[0]}
    for (path, old), new, init in zip(pytree.tree_flatten_with_path(state)[0], flatten_state(after),
                                      flatten_state(fresh)):
        dim = flat_dims.get(pytree.keystr(path), 0)
        if path[0].key == "clock" and path[1].key == "frame":
            assert dim is None and torch.equal(old, new)  # the batch clock runs on
            continue
        for row in (0, 2):
            assert torch.equal(old.select(dim, row), new.select(dim, row)), pytree.keystr(path)
        if path[0].key == "clock":  # the reset stream's session starts now
            assert new[1] == 0 and old[1] > 0
        else:
            assert torch.equal(new.select(dim, 1), init.select(dim, 1)), pytree.keystr(path)
    assert not torch.equal(state["gru"]["h"][:, 1], after["gru"]["h"][:, 1])  # something was there to reset


def test_reset_streams_is_generic():
    state = {"a": torch.arange(6.0).view(3, 2), "b": {"c": torch.arange(6.0).view(2, 3)}, "s": torch.tensor([7])}
    fresh = {"a": torch.zeros(3, 2), "b": {"c": -torch.ones(2, 3)}, "s": torch.tensor([0])}
    out = reset_streams(state, fresh, torch.tensor([False, True, False]), {"b": {"c": 1}, "s": None})
    assert out["a"].tolist() == [[0, 1], [0, 0], [4, 5]]
    assert out["b"]["c"].tolist() == [[0, -1, 2], [3, -1, 5]]
    assert out["s"].tolist() == [7]


def test_step_returns_the_state_structure_it_was_given(model):
    state = model.initial_state(2)
    mel = torch.randn(2, 3, model.cfg.mel.feature_dim)
    tokens = torch.full((2, 3), model.lm.info.pad_token_id)
    with torch.inference_mode():
        _, new = model.step(mel, tokens, torch.zeros(2, model.cfg.style_dim), state)
    assert state_spec(new) == state_spec(state)
    assert [x.shape for x in flatten_state(new)] == [x.shape for x in flatten_state(state)]
    assert new["clock"]["frame"].tolist() == [3] and new["clock"]["age"].tolist() == [3, 3]
    broken = {k: v for k, v in state.items() if k != "gru"}
    with pytest.raises(KeyError):
        model.step(mel, tokens, torch.zeros(2, model.cfg.style_dim), broken)
