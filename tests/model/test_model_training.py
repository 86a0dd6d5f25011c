"""The LM stays frozen, everything else learns, and a small batch can be overfitted."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hop.model import Discriminator, Hop, HopConfig, TED_GESTURE, log_mel

WINDOW = 34
FPS = 15


def _batch(model, batch=4, seed=0):
    """Real-shaped data: 34 frames at 15 fps with 2.27 s of audio, poses near the TED mean."""
    rng = np.random.default_rng(seed)
    n = -(-WINDOW * 16000 // FPS)  # 36,267 samples, as in the TED windows
    t = np.arange(n) / 16000
    audio = [(0.2 * np.sin(2 * np.pi * (150 + 40 * b) * t) * (np.sin(2 * np.pi * (1 + b) * t) > 0)
              + 0.01 * rng.standard_normal(n)).astype(np.float32) for b in range(batch)]
    mel = torch.from_numpy(np.stack([log_mel(a, model.cfg.mel) for a in audio]))
    phase = torch.linspace(0, 2 * np.pi, WINDOW)
    poses = torch.stack([0.3 * torch.sin(phase[:, None] * (b + 1) + torch.arange(27) * 0.2)
                         for b in range(batch)])
    tokens = torch.from_numpy(rng.integers(1000, 9000, (batch, WINDOW)))
    prev = torch.cat([torch.zeros(batch, 1, 27), poses[:, :-1]], 1)
    known = torch.ones(batch, WINDOW)
    known[:, 0] = 0
    speaker = torch.arange(batch)
    return mel, tokens, poses, prev, known, speaker


@pytest.fixture
def model(default_lm):
    torch.manual_seed(0)
    return Hop(HopConfig(fps=FPS, lm_stride=1, n_prototypes=64), lm=default_lm)


def test_lm_frozen_and_everything_else_gets_gradient(model):
    model.train()
    assert not model.lm.training
    lm_before = {k: v.clone() for k, v in model.lm.named_buffers()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    mel, tokens, poses, prev, known, speaker = _batch(model)
    style, mu, logvar = model.style(speaker)
    out = model.forward_offline(mel, tokens, style, prev, known)
    loss = F.huber_loss(out, poses) - 1e-3 * logvar.mean() + 1e-3 * mu.pow(2).mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(not p.requires_grad for p in model.lm.parameters())
    opt.step()
    assert all(torch.equal(v, lm_before[k]) for k, v in model.lm.named_buffers())
    assert "lm." not in " ".join(model.state_dict().keys())  # LM weights never go into checkpoints


def test_discriminator_learns_from_its_loss():
    disc = Discriminator(TED_GESTURE.pose_dim)
    real, fake = torch.randn(4, WINDOW, 27), torch.randn(4, WINDOW, 27) * 0.1
    loss = F.binary_cross_entropy_with_logits(disc(real), torch.ones(4)) + \
        F.binary_cross_entropy_with_logits(disc(fake), torch.zeros(4))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())
    assert disc(real).shape == (4,)


@pytest.mark.slow
def test_overfits_one_small_batch(model):
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    mel, tokens, poses, prev, known, speaker = _batch(model, batch=2)
    losses = []
    for _ in range(150):
        style, _, _ = model.style(speaker, sample=False)
        loss = F.huber_loss(model.forward_offline(mel, tokens, style, prev, known), poses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"loss went from {losses[0]:.4f} to {losses[-1]:.4f}"


@pytest.mark.parametrize("ablation", [dict(use_graph=False), dict(use_reprogramming=False), dict(use_lm=False),
                                      dict(use_lm=False, use_reprogramming=False)])
def test_ablations_build_and_run(default_lm, ablation):
    model = Hop(HopConfig(fps=FPS, n_prototypes=32, **ablation), lm=default_lm).eval()
    mel, tokens, poses, prev, known, speaker = _batch(model, batch=2)
    with torch.inference_mode():
        out, state = model.step(mel, tokens, torch.zeros(2, model.cfg.style_dim), model.initial_state(2))
    assert out.shape == (2, WINDOW, 27) and torch.isfinite(out).all()


def test_paper_mode_is_bidirectional_and_refuses_to_stream(default_lm):
    model = Hop(HopConfig(fps=FPS, causal=False, n_prototypes=32), lm=default_lm).eval()
    mel, tokens, poses, prev, known, speaker = _batch(model, batch=2)
    style = torch.zeros(2, model.cfg.style_dim)
    with torch.inference_mode():
        out = model.forward_offline(mel, tokens, style, prev, known)
        later = mel.clone()
        later[:, -5:] += 1.0
        out_later = model.forward_offline(later, tokens, style, prev, known)
    assert (out[:, 0] - out_later[:, 0]).abs().max() > 0  # the future changes the past: not causal
    with pytest.raises(RuntimeError, match="paper mode"):
        model.step(mel, tokens, style, model.initial_state(2))


def test_causal_model_ignores_the_future(default_lm):
    model = Hop(HopConfig(fps=FPS, n_prototypes=32), lm=default_lm).eval()
    mel, tokens, *_ = _batch(model, batch=1)
    style = torch.zeros(1, model.cfg.style_dim)
    with torch.inference_mode():
        out, _ = model.step(mel, tokens, style, model.initial_state(1))
        later = mel.clone()
        later[:, 20:] += 1.0
        out_later, _ = model.step(later, tokens, style, model.initial_state(1))
    assert torch.equal(out[:, :20], out_later[:, :20])
    assert not torch.equal(out[:, 20:], out_later[:, 20:])


def test_ted_expressive_skeleton_streams(default_lm):
    model = Hop(HopConfig(skeleton="ted_expressive", fps=FPS, n_prototypes=32), lm=default_lm).eval()
    mel = torch.randn(1, 10, model.cfg.mel.feature_dim)
    tokens = torch.zeros(1, 10, dtype=torch.long)
    with torch.inference_mode():
        out, _ = model.step(mel, tokens, torch.zeros(1, model.cfg.style_dim), model.initial_state(1))
    assert out.shape == (1, 10, 126)
