"""Everyday streaming: audio in, denormalised pose frames out, state kept inside.

``HopStream`` owns, per stream of a batch, a streaming log-Mel front end, the
pending text tokens, and the model's state (a pytree of tensors, see hop.model.hop).
Streams in one batch advance together (the same number of samples per push); each
can be reset on its own.
"""

from __future__ import annotations

import numpy as np
import torch

from .frontend import StreamingLogMel
from .hop import Hop


class HopStream:
    """``step``: what advances the model, called as ``step(mel, tokens, style, state, first_frame)``
    and returning (poses, new_state); by default eager ``model.step`` (a compiled or
    TensorRT step from hop.engine.backends fits the same slot)."""

    def __init__(self, model: Hop, batch: int = 1, device: str | torch.device = "cpu", step=None):
        if not model.cfg.causal:
            raise ValueError("HopStream needs a causal (streaming) model; this one was built with causal=False")
        self.model = model.eval()
        self.device = torch.device(device)
        self.batch = batch
        self.frontends = [StreamingLogMel(model.cfg.mel) for _ in range(batch)]
        self.state = model.initial_state(batch, self.device)
        self.style = torch.zeros(batch, model.cfg.style_dim, device=self.device)  # the prior's mean
        self.pad_token = model.lm.info.pad_token_id if model.lm is not None else 0
        self._pending_tokens: list[dict[int, int]] = [{} for _ in range(batch)]
        self._mean = model.mean_pose.detach().cpu().numpy()
        self._step = step or (lambda mel, tokens, style, state, first_frame:
                              model.step(mel, tokens, style, state,
                                         lm_cols=model.lm_columns(first_frame, mel.shape[1])))

    @property
    def frames_done(self) -> int:
        return self.frontends[0].frames_emitted

    def set_style(self, stream: int, vector: np.ndarray | None = None, speaker: int | None = None,
                  sample: bool = False, seed: int | None = None) -> None:
        """Style by an explicit vector, a trained speaker id (its posterior mean or a sample), or a prior sample."""
        with torch.no_grad():
            if vector is not None:
                v = torch.as_tensor(np.asarray(vector, dtype=np.float32), device=self.device)
                if v.shape != (self.model.cfg.style_dim,):
                    raise ValueError(f"style vector must have {self.model.cfg.style_dim} numbers, got {tuple(v.shape)}")
            elif speaker is not None:
                if not 0 <= speaker < self.model.cfg.n_speakers:
                    raise ValueError(f"speaker id {speaker} out of range 0..{self.model.cfg.n_speakers - 1}")
                gen = torch.Generator().manual_seed(seed) if seed is not None else None
                mu, logvar = self.model.style.table.weight[speaker].chunk(2)
                noise = torch.randn(mu.shape, generator=gen).to(self.device) if sample else 0.0
                v = mu + noise * torch.exp(0.5 * logvar)
            else:
                gen = torch.Generator().manual_seed(seed) if seed is not None else None
                v = torch.randn(self.model.cfg.style_dim, generator=gen).to(self.device) if sample else \
                    torch.zeros(self.model.cfg.style_dim, device=self.device)
            self.style[stream] = v

    def add_tokens(self, stream: int, frame_tokens: dict[int, int]) -> int:
        """Queue LM token ids for future frames of one stream; returns how many arrived too late."""
        late = 0
        for frame, token in frame_tokens.items():
            if frame < self.frames_done:
                late += 1
            else:
                self._pending_tokens[stream][frame] = int(token)
        return late

    def reset(self, streams: list[int]) -> None:
        """Start the given streams afresh; the others continue bit-identically."""
        mask = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        mask[streams] = True
        self.state = self.model.reset_state(self.state, mask)
        for s in streams:
            self.frontends[s].silence_history()
            self._pending_tokens[s].clear()

    def seed(self, stream: int, pose: np.ndarray) -> None:
        """Set the pose the stream continues from (direction vectors with the mean included)."""
        pose = torch.as_tensor(np.asarray(pose, dtype=np.float32) - self._mean, device=self.device)
        mask = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        mask[stream] = True
        self.state = self.model.with_prev_pose(self.state, pose, streams=mask)

    @torch.inference_mode()
    def push_audio(self, audio: np.ndarray) -> np.ndarray:
        """audio: (n,) for one stream or (batch, n) 16 kHz float samples.

        Returns (batch, new_frames, pose_dim) direction vectors with the mean added.
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.shape[0] != self.batch:
            raise ValueError(f"got audio for {audio.shape[0]} streams, this HopStream has {self.batch}")
        first = self.frames_done
        mel = np.stack([fe.push(a) for fe, a in zip(self.frontends, audio)])
        t = mel.shape[1]
        if t == 0:
            return np.zeros((self.batch, 0, self.model.cfg.pose_dim), dtype=np.float32)
        tokens = np.full((self.batch, t), self.pad_token, dtype=np.int64)
        for s, pending in enumerate(self._pending_tokens):
            for i in range(t):
                tok = pending.pop(first + i, None)
                if tok is not None:
                    tokens[s, i] = tok
        poses, self.state = self._step(torch.from_numpy(mel).to(self.device),
                                       torch.from_numpy(tokens).to(self.device), self.style, self.state, first)
        return poses.float().cpu().numpy() + self._mean

    def skip_audio(self, audio: np.ndarray) -> int:
        """Let audio pass without running the model (a runtime catching up after a stall).

        The front ends consume it so that later frames see the right history; the
        model's state is left as it was and simply continues. Text queued for the
        skipped frames is dropped. Returns the number of frames skipped.
        """
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        first = self.frames_done
        for fe, a in zip(self.frontends, audio):
            fe.skip(a)
        for pending in self._pending_tokens:
            for frame in range(first, self.frames_done):
                pending.pop(frame, None)
        return self.frames_done - first
