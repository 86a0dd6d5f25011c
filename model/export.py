"""The streaming step as a plain tensor function, for compilers and exporters.

A model's state is a pytree (nested dicts of tensors, one entry per stateful
layer; see hop.model.hop). ``flatten_state`` turns it into a flat tuple of
tensors with ``torch.utils._pytree`` and ``unflatten_state`` rebuilds it from the
structure (the spec) of a state it came from. ``ExplicitStep`` advances a causal
model by a fixed number of frames with every state tensor as an argument and a
return value, and with the frames that run the LM fixed when it is built (the
only choice a step makes on the batch clock). A runtime keeps one
``ExplicitStep`` per LM phase and picks by the frame number it tracks on the
host, so the traced graphs have no data-dependent branches: torch.export,
torch.compile and torch-tensorrt all take them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .hop import Hop, HopState


def flatten_state(state: HopState) -> tuple[torch.Tensor, ...]:
    """The state's tensors in pytree order."""
    return tuple(pytree.tree_leaves(state))


def state_spec(state: HopState) -> pytree.TreeSpec:
    """The structure of a state (the same for every batch size and every step of one model)."""
    return pytree.tree_structure(state)


def unflatten_state(flat: tuple[torch.Tensor, ...] | list[torch.Tensor], spec: pytree.TreeSpec) -> HopState:
    return pytree.tree_unflatten(list(flat), spec)


class ExplicitStep(nn.Module):
    """forward(mel, tokens, style, *flat_state) -> (poses, *new_flat_state).

    mel (B, frames, feature_dim) float, tokens (B, frames) long, style (B, style_dim);
    ``flat_state`` is ``flatten_state(state)`` and ``self.spec`` rebuilds it.
    ``lm_cols``: which of the ``frames`` frames carry an LM token, i.e.
    ``model.lm_columns(first_frame, frames)`` for the frames this instance will be
    called on; the caller must only use it where that holds.
    """

    def __init__(self, model: Hop, frames: int, lm_cols: list[int]):
        super().__init__()
        if not model.cfg.causal:
            raise ValueError("only causal (streaming) models have a step to export")
        self.model = model
        self.frames = frames
        self.lm_cols = list(lm_cols)
        self.spec = state_spec(model.initial_state(1))
        if model.cfg.use_reprogramming:
            with torch.no_grad():  # warm the prototype cache: traced graphs take it as constants
                model.reprogram.prototype_kv(model.lm.word_embeddings)

    def forward(self, mel: torch.Tensor, tokens: torch.Tensor, style: torch.Tensor, *flat_state: torch.Tensor):
        state = unflatten_state(flat_state, self.spec)
        poses, state = self.model.step(mel, tokens, style, state, lm_cols=self.lm_cols)
        return (poses, *flatten_state(state))


def step_variants(model: Hop, frames: int = 1) -> list[ExplicitStep]:
    """One ExplicitStep per phase of the LM stride: variant ``k`` serves first frames with
    ``first % period == k`` (period = lm_stride, or 1 without an LM)."""
    period = model.cfg.lm_stride if model.cfg.use_lm else 1
    return [ExplicitStep(model, frames, model.lm_columns(k, frames)) for k in range(period)]


def example_inputs(model: Hop, batch: int = 1, frames: int = 1, device: str | torch.device = "cpu"):
    """Zero inputs of the right shapes and dtypes for tracing a step."""
    cfg = model.cfg
    mel = torch.zeros(batch, frames, cfg.mel.feature_dim, device=device)
    tokens = torch.zeros(batch, frames, dtype=torch.long, device=device)
    style = torch.zeros(batch, cfg.style_dim, device=device)
    return (mel, tokens, style, *flatten_state(model.initial_state(batch, device)))
