"""The reprogramming prototypes' key/value cache: kept in eval mode, dropped whenever the weights
it came from can have changed, never kept in training mode."""

import torch

from hop.model import Hop, HopConfig


def _reprogrammed(model, mel):
    with torch.no_grad():
        return model.reprogram(mel, model.lm.word_embeddings)


def test_prototype_cache_is_kept_in_eval_and_never_in_training(default_lm):
    torch.manual_seed(1)
    model = Hop(HopConfig(n_prototypes=16), lm=default_lm).eval()
    mel = torch.randn(1, 2, model.cfg.mel.feature_dim)
    first = _reprogrammed(model, mel)
    cached = model.reprogram._kv
    assert cached is not None
    assert torch.equal(_reprogrammed(model, mel), first) and model.reprogram._kv is cached
    model.train()
    assert model.reprogram._kv is None
    with torch.no_grad():
        model.reprogram(mel, model.lm.word_embeddings)
    assert model.reprogram._kv is None  # training mode: computed afresh every time
    model.eval()
    assert torch.equal(_reprogrammed(model, mel), first)


def test_prototype_cache_follows_every_weight_change(default_lm):
    torch.manual_seed(1)
    model = Hop(HopConfig(n_prototypes=16), lm=default_lm).eval()
    torch.manual_seed(2)
    other = Hop(HopConfig(n_prototypes=16), lm=default_lm).eval()
    mel = torch.randn(1, 2, model.cfg.mel.feature_dim)
    mine, theirs = _reprogrammed(model, mel), _reprogrammed(other, mel)
    assert not torch.equal(mine, theirs)

    # loading weights
    model.load_state_dict(other.state_dict())
    assert torch.equal(_reprogrammed(model, mel), theirs)

    # moving or casting the module
    model.reprogram.double()
    assert _reprogrammed(model, mel.double()).dtype == torch.float64
    model.reprogram.float()
    assert torch.equal(_reprogrammed(model, mel), theirs)

    # a different word-embedding table (as when the LM is cast to bf16, which replaces it)
    table = model.lm.word_embeddings * 1.5
    with torch.no_grad():
        scaled = model.reprogram(mel, table)
        model.reprogram.invalidate()
        assert torch.equal(scaled, model.reprogram(mel, table))
    assert not torch.equal(scaled, theirs)
    assert torch.equal(_reprogrammed(model, mel), theirs)

    # baking: the baked prototypes give the same keys and values
    model.reprogram.invalidate()
    reference = _reprogrammed(model, mel)
    model.reprogram.bake(model.lm.word_embeddings)
    assert model.reprogram._kv is None
    assert torch.equal(_reprogrammed(model, mel), reference)


def test_gradients_reach_the_prototypes_in_eval_mode_with_grad(default_lm):
    torch.manual_seed(1)
    model = Hop(HopConfig(n_prototypes=16), lm=default_lm).eval()
    mel = torch.randn(1, 2, model.cfg.mel.feature_dim)
    _reprogrammed(model, mel)  # warm the cache under no_grad
    model.reprogram(mel, model.lm.word_embeddings).sum().backward()
    assert model.reprogram.compress.weight.grad is not None
    assert model.reprogram.key.weight.grad.abs().sum() > 0
