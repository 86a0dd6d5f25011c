import pytest
import torch
from transformers import AutoModel, GPT2Config, GPT2Model

from hop.model.lm import FrozenLM, LMNotFoundError, resolve_lm_path


def test_default_lm_matches_transformers_forward(default_lm):
    hf = AutoModel.from_pretrained(str(resolve_lm_path()), local_files_only=True).eval()
    ids = torch.randint(1000, 8000, (2, 17))
    positions = torch.arange(17).expand(2, 17)
    ours, _, _ = default_lm(default_lm.embed_tokens(ids), positions, torch.ones(2, 17, 17, dtype=torch.bool))
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
    assert (ours - ref).abs().max() < 1e-4


def test_incremental_cache_equals_one_causal_pass(default_lm):
    x = torch.randn(1, 20, default_lm.width)
    pos = torch.arange(20).expand(1, 20)
    causal = torch.tril(torch.ones(20, 20, dtype=torch.bool)).expand(1, 20, 20)
    full, _, _ = default_lm(x, pos, causal)
    a, k, v = default_lm(x[:, :9], pos[:, :9], causal[:, :9, :9])
    b, _, _ = default_lm(x[:, 9:], pos[:, 9:], causal[:, 9:, :], k, v)
    assert (torch.cat([a, b], 1) - full).abs().max() < 1e-5


def test_gpt2_family_folder_matches_transformers(tmp_path):
    config = GPT2Config(vocab_size=500, n_positions=64, n_embd=48, n_layer=2, n_head=4)
    torch.manual_seed(3)
    GPT2Model(config).save_pretrained(tmp_path)
    lm = FrozenLM(str(tmp_path))
    assert lm.info.family == "gpt2" and lm.info.width == 48
    ids = torch.randint(0, 500, (1, 12))
    pos = torch.arange(12).expand(1, 12)
    causal = torch.tril(torch.ones(12, 12, dtype=torch.bool)).expand(1, 12, 12)
    ours, _, _ = lm(lm.embed_tokens(ids), pos, causal)
    hf = GPT2Model.from_pretrained(tmp_path, local_files_only=True).eval()
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
    assert (ours - ref).abs().max() < 1e-4


def test_lm_is_frozen_and_stays_in_eval_mode(default_lm):
    assert not any(p.requires_grad for p in default_lm.parameters())
    default_lm.train()
    assert not default_lm.training
    assert all(not b.requires_grad for b in default_lm.buffers())


def test_missing_or_wrong_folder_names_path_and_fix(tmp_path):
    with pytest.raises(LMNotFoundError, match="does not exist.*local Hugging Face model folder"):
        resolve_lm_path(str(tmp_path / "nowhere"))
    with pytest.raises(LMNotFoundError, match="no config.json"):
        resolve_lm_path(str(tmp_path))
