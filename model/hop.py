"""HOP: audio-text semantics + audio-motion rhythm -> upper-body gestures.

Reads top to bottom: the config, then the parts in the order data flows through
them (reprogramming -> frozen LM context, spatio-temporal graph encoder, style,
fusion + GRU generator), then the discriminator.

Two modes share every part:

* ``causal=True`` (streaming, the default): every part looks only at the past.
  ``Hop.step`` advances any number of pose frames and carries all state in a
  ``HopState`` of plain tensors, so a step can be traced, compiled or exported.
  Running a whole sequence in one call and running it in chunks give the same
  result (see tests/model).
* ``causal=False`` (the paper's offline mode): the LM attends over the whole
  window and the GRU is bidirectional. For comparisons with the paper only.

Pose tensors are normalised direction vectors (dir_vec minus the dataset mean).
``prev_pose[t]`` is the pose of frame t-1 as far as it is known (seed, ground
truth under teacher forcing, or the model's own output); ``prev_known[t]`` is 1
where it is known.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .frontend import MelOptions
from .lm import DEFAULT_LM, FrozenLM
from .skeleton import get_skeleton


@dataclass
class HopConfig:
    skeleton: str = "ted_gesture"
    fps: int = 30
    mel: MelOptions = field(default_factory=MelOptions)
    causal: bool = True
    lm: str = DEFAULT_LM
    # Reprogramming: Mel queries attend over prototypes compressed from the LM's vocabulary.
    n_prototypes: int = 1000
    reprog_heads: int = 8
    reprog_head_dim: int = 32
    # LM context in streaming mode: two staggered anchored windows of lm_window frames
    # (see LMContext); per-frame cost is flat however long a session runs.
    lm_window: int = 32
    # The LM reads one token every lm_stride pose frames (frames divisible by the
    # stride); frames in between reuse its output. The LM's weights dominate the
    # per-frame cost, and words change far more slowly than 30 fps.
    lm_stride: int = 2
    # Spatio-temporal graph encoder.
    graph_channels: int = 32
    graph_audio_channels: int = 8
    graph_dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    graph_kernel: int = 2
    graph_node_dim: int = 10
    graph_out_channels: int = 8
    # Fusion and generator.
    audio_dim: int = 64
    semantic_dim: int = 128
    fusion_dim: int = 256
    gru_hidden: int = 256
    gru_layers: int = 2
    # Style (speaker) VAE.
    n_speakers: int = 64
    style_dim: int = 16
    dropout: float = 0.1
    # Ablations from the paper.
    use_graph: bool = True
    use_reprogramming: bool = True
    use_lm: bool = True

    def __post_init__(self):
        if isinstance(self.mel, dict):
            self.mel = MelOptions(**self.mel)
        self.graph_dilations = tuple(self.graph_dilations)
        if self.mel.fps != self.fps:
            self.mel = MelOptions(**{**asdict(self.mel), "fps": self.fps})
        if self.lm_window % 2:
            raise ValueError(f"lm_window must be even, got {self.lm_window}")

    @property
    def n_bones(self) -> int:
        return get_skeleton(self.skeleton).n_bones

    @property
    def pose_dim(self) -> int:
        return 3 * self.n_bones

    def to_dict(self) -> dict:
        return asdict(self)


class HopState(NamedTuple):
    """Everything a causal step carries from one call to the next, per stream (batch row).

    All streams of a batch share one frame clock (``frame``); a stream that is
    reset keeps the clock and forgets everything before its ``start`` frame.
    """
    frame: torch.Tensor  # (B,) long: the batch clock, frames produced so far (equal in every row)
    start: torch.Tensor  # (B,) long: first frame of this stream's current session
    lm_k: torch.Tensor  # (B, 2, layers, heads, lm_window, head_dim): keys of the last lm_window LM tokens
    lm_v: torch.Tensor  # same shape: values
    lm_out: torch.Tensor  # (B, semantic_dim): semantic features of the latest LM token
    conv: tuple[torch.Tensor, ...]  # per graph layer (B, (kernel-1)*dilation, nodes, C): left context
    gru: torch.Tensor  # (gru_layers, B, gru_hidden)
    prev_pose: torch.Tensor  # (B, pose_dim): the last pose produced (or seeded)
    prev_known: torch.Tensor  # (B,) float: 1 once prev_pose holds a real pose


# ---------------------------------------------------------------------------------------
# Audio -> LM space: reprogramming


class Reprogramming(nn.Module):
    """Cross-attention from per-frame Mel queries to V' prototypes of the LM vocabulary.

    The prototypes (a learned linear compression of the V-word embedding table)
    and their key/value projections do not depend on the input. In eval mode they
    are computed on first use and kept until something can have changed them:
    ``train()``/``eval()``, loading weights, moving or casting the module,
    ``bake()``, or a different word-embedding table (the frozen LM's table changes
    only by being replaced, e.g. cast to bf16). In training mode they are never
    kept. Whoever edits the weights in place in eval mode calls ``invalidate()``.
    """

    def __init__(self, query_dim: int, lm_width: int, vocab_size: int, n_prototypes: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.compress = nn.Linear(vocab_size, n_prototypes)
        self.query = nn.Linear(query_dim, heads * head_dim)
        self.key = nn.Linear(lm_width, heads * head_dim)
        self.value = nn.Linear(lm_width, heads * head_dim)
        self.out = nn.Linear(heads * head_dim, lm_width)
        nn.init.normal_(self.compress.weight, std=1.0 / math.sqrt(vocab_size))
        self._kv: tuple | None = None  # (keys, values, weakref to the word-embedding table or None)

    @property
    def baked(self) -> bool:
        return self.compress is None

    def prototypes_of(self, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(V', width): the prototypes, compressed from the (V, width) word-embedding table
        (the one place they are computed), or the baked ones."""
        if self.baked:
            return self.prototypes
        return self.compress(word_embeddings.t().to(self.compress.weight.dtype)).t()

    def bake(self, word_embeddings: torch.Tensor | None) -> None:
        """Replace the V x V' compression by the V' prototypes it produces (inference only).

        The compression holds V*V' weights (30 M for MiniLM with V'=1000) but only its
        V' output rows matter once training is over; a baked model is ~100x smaller
        on disk. ``word_embeddings=None`` makes an empty slot for load_state_dict.
        """
        if self.baked:
            return
        with torch.no_grad():
            if word_embeddings is None:
                prototypes = torch.zeros(self.compress.out_features, self.key.in_features)
            else:
                prototypes = self.prototypes_of(word_embeddings)
        self.compress = None
        self.register_buffer("prototypes", prototypes.contiguous())
        self.invalidate()

    # -- the prototype key/value cache ---------------------------------------------------

    def invalidate(self) -> None:
        """Forget the cached prototype keys/values (they are recomputed on next use)."""
        self._kv = None

    def train(self, mode: bool = True):
        self.invalidate()
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self.invalidate()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self.invalidate()
        super()._load_from_state_dict(*args, **kwargs)

    def prototype_kv(self, word_embeddings: torch.Tensor):
        """Keys and values of the prototypes, each (heads, V', head_dim)."""
        if torch.compiler.is_compiling():
            # A cache warmed before tracing (see export.ExplicitStep) enters the graph as constants.
            return self._kv[:2] if self._kv is not None else self._project_prototypes(word_embeddings)
        if self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            return self._project_prototypes(word_embeddings)  # gradients must reach the weights
        if self._kv is not None and (self.baked or self._kv[2]() is word_embeddings):
            return self._kv[:2]
        k, v = self._project_prototypes(word_embeddings)
        self._kv = (k, v, None if self.baked else weakref.ref(word_embeddings))
        return k, v

    def _project_prototypes(self, word_embeddings: torch.Tensor):
        prototypes = self.prototypes_of(word_embeddings)  # (V', width)
        k = self.key(prototypes).view(-1, self.heads, self.head_dim).transpose(0, 1)  # (heads, V', d)
        v = self.value(prototypes).view(-1, self.heads, self.head_dim).transpose(0, 1)
        return k, v

    def forward(self, mel: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        b, t, _ = mel.shape
        k, v = self.prototype_kv(word_embeddings)
        q = self.query(mel).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        # Plain softmax attention, not F.scaled_dot_product_attention: for the one query
        # row of a streaming step the fused CPU kernel costs about 0.4 ms, this a tenth.
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        attended = torch.matmul(scores.softmax(dim=-1), v)
        return self.out(attended.transpose(1, 2).reshape(b, t, -1))


class LMContext:
    """Which past frames each frame's LM token may attend to, in streaming mode.

    Counted in LM tokens (one every ``lm_stride`` pose frames). Two phases run
    side by side. Phase p restarts its context every ``W`` tokens, at tokens
    ``p*W/2 + k*W``; within a context, positions count from its start. A token
    reads the phase whose context is older, so every token (after the first
    W/2) sees between W/2+1 and W tokens of left context, and each token costs
    two LM rows however long the session has run. A KV cache of the last W
    tokens per phase holds everything any token can attend to.

    Why not one ever-growing causal cache: positions would run past the LM's
    position table and the per-token cost would grow with the session. Why not
    re-running a sliding window: W tokens per step instead of two.
    """

    def __init__(self, window: int):
        self.window = window
        self.half = window // 2

    def positions(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, T) absolute frame numbers -> (B, 2, T) position ids per phase."""
        offsets = torch.tensor([0, self.half], device=frames.device).view(1, 2, 1)
        return torch.remainder(frames.unsqueeze(1) - offsets, self.window)

    def attend(self, query_frames: torch.Tensor, key_frames: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """(B, T) and (B, K) absolute token numbers, (B,) first valid token -> (B, 2, T, K) bool."""
        offsets = torch.tensor([0, self.half], device=query_frames.device).view(1, 2, 1)
        q_ctx = torch.div(query_frames.unsqueeze(1) - offsets, self.window, rounding_mode="floor")
        k_ctx = torch.div(key_frames.unsqueeze(1) - offsets, self.window, rounding_mode="floor")
        same_context = q_ctx.unsqueeze(-1) == k_ctx.unsqueeze(-2)
        past = key_frames.unsqueeze(1).unsqueeze(2) <= query_frames.unsqueeze(1).unsqueeze(-1)
        exists = (key_frames >= start.unsqueeze(1)).unsqueeze(1).unsqueeze(2)
        return same_context & past & exists

    def read_phase(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T) long: which phase's output each frame uses."""
        return (torch.remainder(frames, self.window) < self.half).long()


# ---------------------------------------------------------------------------------------
# Audio + motion -> rhythm: spatio-temporal graph encoder (GraphWaveNet style)


class GraphLayer(nn.Module):
    """Gated dilated causal temporal conv, skip output, diffusion over two graph supports.

    Tensors are channels-last, (B, T, N, C): a temporal tap is a time-shifted view
    and every 1x1 convolution a Linear, which is much cheaper than a dilated
    Conv2d for the few frames a streaming step carries.
    """

    def __init__(self, channels: int, kernel: int, dilation: int, supports: int, order: int = 2):
        super().__init__()
        self.kernel, self.dilation, self.order = kernel, dilation, order
        self.context = (kernel - 1) * dilation
        self.filter_gate = nn.Linear(kernel * channels, 2 * channels)
        self.skip = nn.Linear(channels, channels)
        self.mix = nn.Linear(channels * (1 + supports * order), channels)

    def forward(self, x: torch.Tensor, left: torch.Tensor, supports: list[torch.Tensor]):
        """x: (B, T, N, C); left: (B, context, N, C) earlier inputs -> (x_out, skip, new_left)."""
        t = x.shape[1]
        padded = torch.cat([left, x], dim=1)
        taps = [padded[:, self.context - j * self.dilation:self.context - j * self.dilation + t]
                for j in range(self.kernel - 1, -1, -1)]  # oldest tap first
        filt, gate = self.filter_gate(torch.cat(taps, dim=-1)).chunk(2, dim=-1)
        z = torch.tanh(filt) * torch.sigmoid(gate)
        skip = self.skip(z)
        diffused = [z]
        for a in supports:
            h = z
            for _ in range(self.order):
                h = a @ h  # node i gathers from the nodes its row of the support weights
                diffused.append(h)
        out = self.mix(torch.cat(diffused, dim=-1)) + x
        return out, skip, padded[:, padded.shape[1] - self.context:]


class GraphEncoder(nn.Module):
    def __init__(self, cfg: HopConfig):
        super().__init__()
        skel = get_skeleton(cfg.skeleton)
        n, c = skel.n_bones, cfg.graph_channels
        self.nodes = n
        adjacency = torch.from_numpy(skel.bone_adjacency()) + torch.eye(n)
        self.register_buffer("skeleton_support", adjacency / adjacency.sum(1, keepdim=True))
        self.node_source = nn.Parameter(torch.randn(n, cfg.graph_node_dim) * 0.1)
        self.node_target = nn.Parameter(torch.randn(n, cfg.graph_node_dim) * 0.1)
        # Node inputs: the bone's previous direction (3), whether it is known (1), and
        # audio features projected separately for every node.
        self.audio_to_nodes = nn.Linear(cfg.audio_dim, n * cfg.graph_audio_channels)
        self.audio_channels = cfg.graph_audio_channels
        self.start = nn.Linear(4 + cfg.graph_audio_channels, c)
        self.layers = nn.ModuleList(GraphLayer(c, cfg.graph_kernel, d, supports=2) for d in cfg.graph_dilations)
        self.end = nn.Sequential(nn.ReLU(), nn.Linear(c, c), nn.ReLU(), nn.Linear(c, cfg.graph_out_channels))
        self.out_dim = n * cfg.graph_out_channels

    def adaptive_support(self) -> torch.Tensor:
        return torch.softmax(F.relu(self.node_source @ self.node_target.t()), dim=1)

    def initial_state(self, batch: int, device=None) -> tuple[torch.Tensor, ...]:
        channels = self.start.out_features
        return tuple(torch.zeros(batch, layer.context, self.nodes, channels, device=device) for layer in self.layers)

    def forward(self, prev_pose, prev_known, audio, conv_state):
        """prev_pose (B,T,3N), prev_known (B,T), audio (B,T,audio_dim) -> (B,T,out_dim), new conv state."""
        b, t, _ = prev_pose.shape
        pose_nodes = prev_pose.view(b, t, self.nodes, 3)
        known = prev_known.view(b, t, 1, 1).expand(b, t, self.nodes, 1)
        audio_nodes = self.audio_to_nodes(audio).view(b, t, self.nodes, self.audio_channels)
        x = self.start(torch.cat([pose_nodes, known, audio_nodes], dim=-1))  # (B, T, N, C)
        supports = [self.skeleton_support, self.adaptive_support()]
        skip = 0
        new_state = []
        for layer, left in zip(self.layers, conv_state):
            x, s, left = layer(x, left, supports)
            skip = skip + s
            new_state.append(left)
        # The last layer's residual output joins the skip sum so that no layer is a dead end.
        return self.end(skip + x).reshape(b, t, self.out_dim), tuple(new_state)


# ---------------------------------------------------------------------------------------
# Speaker style


class StyleEncoder(nn.Module):
    """Speaker id -> (mu, logvar) of a style posterior; z by reparameterisation."""

    def __init__(self, n_speakers: int, style_dim: int):
        super().__init__()
        self.table = nn.Embedding(n_speakers, 2 * style_dim)
        nn.init.normal_(self.table.weight, std=0.1)

    def forward(self, speaker: torch.Tensor, sample: bool = True):
        mu, logvar = self.table(speaker).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return z, mu, logvar


# ---------------------------------------------------------------------------------------
# The generator


class Hop(nn.Module):
    def __init__(self, cfg: HopConfig, lm: FrozenLM | None = None):
        super().__init__()
        self.cfg = cfg
        skeleton = get_skeleton(cfg.skeleton)
        mean = skeleton.mean_pose() if skeleton.mean_dir_vec is not None else [0.0] * cfg.pose_dim
        # The dataset mean pose the model's outputs are relative to; saved with the weights.
        self.register_buffer("mean_pose", torch.as_tensor(mean, dtype=torch.float32))
        need_lm = cfg.use_lm or cfg.use_reprogramming
        self.lm = (lm or FrozenLM(cfg.lm)) if need_lm else None
        width = self.lm.width if self.lm is not None else cfg.semantic_dim
        feat = cfg.mel.feature_dim
        self.audio = nn.Sequential(nn.Linear(feat, cfg.audio_dim), nn.GELU(), nn.Linear(cfg.audio_dim, cfg.audio_dim))
        if cfg.use_reprogramming:
            self.reprogram = Reprogramming(feat, width, self.lm.info.vocab_size, cfg.n_prototypes,
                                           cfg.reprog_heads, cfg.reprog_head_dim)
        else:
            self.reprogram_free = nn.Linear(feat, width)  # ablation: audio enters the LM by a plain projection
        text_width = width if self.lm is not None else 0
        self.lm_input = nn.Linear(width + text_width, width)
        self.lm_context = LMContext(cfg.lm_window)
        self.semantic = nn.Linear(width, cfg.semantic_dim)
        self.graph = GraphEncoder(cfg) if cfg.use_graph else None
        self.style = StyleEncoder(cfg.n_speakers, cfg.style_dim)
        fused_in = cfg.semantic_dim + cfg.audio_dim + cfg.style_dim + (self.graph.out_dim if self.graph else 0)
        self.fuse = nn.Sequential(nn.Linear(fused_in, cfg.fusion_dim), nn.GELU(), nn.Dropout(cfg.dropout))
        self.gru = nn.GRU(cfg.fusion_dim, cfg.gru_hidden, cfg.gru_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0, bidirectional=not cfg.causal)
        self.head = nn.Linear(cfg.gru_hidden * (1 if cfg.causal else 2), cfg.pose_dim)

    # -- state ---------------------------------------------------------------------------

    def initial_state(self, batch: int, device=None) -> HopState:
        cfg = self.cfg
        device = device or next(self.parameters()).device
        lm_dtype = torch.float32
        if self.lm is not None and cfg.use_lm:
            info = self.lm.info
            kv_shape = (batch, 2, info.n_layers, info.n_heads, cfg.lm_window, self.lm.head_dim)
            lm_dtype = self.lm.word_embeddings.dtype
        else:
            kv_shape = (batch, 2, 0, 0, cfg.lm_window, 0)
        conv = self.graph.initial_state(batch, device) if self.graph else ()
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        return HopState(
            frame=zeros, start=zeros.clone(),
            lm_k=torch.zeros(kv_shape, dtype=lm_dtype, device=device),
            lm_v=torch.zeros(kv_shape, dtype=lm_dtype, device=device),
            lm_out=torch.zeros(batch, cfg.semantic_dim, device=device),
            conv=conv,
            gru=torch.zeros(cfg.gru_layers, batch, cfg.gru_hidden, device=device),
            prev_pose=torch.zeros(batch, cfg.pose_dim, device=device),
            prev_known=torch.zeros(batch, device=device),
        )

    def reset_state(self, state: HopState, streams: torch.Tensor) -> HopState:
        """Restart the streams selected by the bool mask ``streams`` (B,) at the current frame.

        The batch clock keeps running; rows not selected pass through bit-identically.
        """
        fresh = self.initial_state(state.frame.shape[0], state.frame.device)

        def pick(new, old, batch_dim=0):
            shape = [1] * old.dim()
            shape[batch_dim] = -1
            return torch.where(streams.view(shape), new, old)

        return HopState(
            frame=state.frame, start=pick(state.frame, state.start),
            lm_k=pick(fresh.lm_k, state.lm_k), lm_v=pick(fresh.lm_v, state.lm_v),
            lm_out=pick(fresh.lm_out, state.lm_out),
            conv=tuple(pick(f, s) for f, s in zip(fresh.conv, state.conv)),
            gru=pick(fresh.gru, state.gru, batch_dim=1), prev_pose=pick(fresh.prev_pose, state.prev_pose),
            prev_known=pick(fresh.prev_known, state.prev_known),
        )

    # -- parts of a step -----------------------------------------------------------------

    def _lm_input(self, mel, tokens):
        """Reprogrammed audio joined with the frame's text token, in the LM's input space."""
        if self.cfg.use_reprogramming:
            reprogrammed = self.reprogram(mel, self.lm.word_embeddings)
        else:
            reprogrammed = self.reprogram_free(mel)
        if self.lm is None:
            return self.lm_input(reprogrammed)
        text = self.lm.embed_tokens(tokens).float()
        return self.lm_input(torch.cat([reprogrammed, text], dim=-1))

    def _run_lm(self, x, positions, attend, past_k=None, past_v=None):
        dtype = self.lm.word_embeddings.dtype  # the LM may run in bf16 while the rest stays fp32
        hidden, keys, values = self.lm(x.to(dtype), positions, attend, past_k, past_v)
        return hidden.float(), keys, values

    def _semantic_offline(self, mel, tokens):
        """Paper mode: one bidirectional LM pass over the whole window."""
        lm_in = self._lm_input(mel, tokens)
        if not self.cfg.use_lm:
            return self.semantic(lm_in)
        b, t, _ = lm_in.shape
        positions = torch.arange(t, device=mel.device).expand(b, t)
        attend = torch.ones(b, t, t, dtype=torch.bool, device=mel.device)
        return self.semantic(self._run_lm(lm_in, positions, attend)[0])

    def lm_columns(self, first_frame: int, frames: int) -> list[int]:
        """Which of ``frames`` frames starting at ``first_frame`` carry an LM token."""
        return [i for i in range(frames) if (first_frame + i) % self.cfg.lm_stride == 0]

    def _semantic_causal(self, mel, tokens, state: HopState, lm_cols: list[int] | None = None):
        """Per-frame semantic features from the LM tokens of this chunk; new LM cache and last output.

        ``lm_cols`` (from ``lm_columns``) may be given by a caller that tracks the
        batch clock itself, so that no value is read back from the state tensors
        (a traced or exported step must not branch on tensor data).
        """
        cfg = self.cfg
        b, t, _ = mel.shape
        if not cfg.use_lm:
            semantic = self.semantic(self._lm_input(mel, tokens))
            return semantic, state.lm_k, state.lm_v, semantic[:, -1]
        stride, window = cfg.lm_stride, cfg.lm_window
        if lm_cols is None:
            lm_cols = self.lm_columns(int(state.frame[0]), t)  # the batch clock: the same in every row
        new_k, new_v, outputs = state.lm_k, state.lm_v, state.lm_out.unsqueeze(1)
        if lm_cols:
            cols = torch.tensor(lm_cols, device=mel.device)
            lm_in = self._lm_input(mel[:, cols], tokens[:, cols])
            n = len(lm_cols)
            token_no = torch.div(state.frame.unsqueeze(1) + cols, stride, rounding_mode="floor")
            key_no = torch.cat([token_no[:, :1] - window + torch.arange(window, device=mel.device), token_no], 1)
            first_token = torch.div(state.start + stride - 1, stride, rounding_mode="floor")
            attend = self.lm_context.attend(token_no, key_no, first_token).reshape(b * 2, n, window + n)
            positions = self.lm_context.positions(token_no).reshape(b * 2, n)
            x = lm_in.unsqueeze(1).expand(b, 2, n, lm_in.shape[-1]).reshape(b * 2, n, -1)
            hidden, keys, values = self._run_lm(x, positions, attend, state.lm_k.flatten(0, 1),
                                                state.lm_v.flatten(0, 1))
            hidden = hidden.view(b, 2, n, -1)
            phase = self.lm_context.read_phase(token_no)
            hidden = torch.gather(hidden, 1, phase.view(b, 1, n, 1).expand(b, 1, n, hidden.shape[-1])).squeeze(1)
            new_k = keys[..., keys.shape[-2] - window:, :].reshape(state.lm_k.shape)
            new_v = values[..., values.shape[-2] - window:, :].reshape(state.lm_v.shape)
            outputs = torch.cat([outputs, self.semantic(hidden)], dim=1)
        # Frame i uses the newest LM output at or before it (index 0 = carried from the last call).
        latest, source = 0, []
        for i in range(t):
            if lm_cols and latest < len(lm_cols) and lm_cols[latest] == i:
                latest += 1
            source.append(latest)
        semantic = outputs[:, source]
        return semantic, new_k, new_v, outputs[:, -1]

    def _generate(self, semantic, audio, style, prev_pose, prev_known, conv_state, gru_state):
        """Graph encoder + fusion + GRU + head over T frames whose pose history is known."""
        t = semantic.shape[1]
        parts = [semantic, audio, style.unsqueeze(1).expand(-1, t, -1)]
        new_conv = conv_state
        if self.graph is not None:
            rhythm, new_conv = self.graph(prev_pose, prev_known, audio, conv_state)
            parts.insert(1, rhythm)
        hidden, new_gru = self.gru(self.fuse(torch.cat(parts, dim=-1)), gru_state)
        return self.head(hidden), new_conv, new_gru

    # -- public entry points ---------------------------------------------------------------

    def step(self, mel: torch.Tensor, tokens: torch.Tensor, style: torch.Tensor, state: HopState,
             prev_pose: torch.Tensor | None = None, prev_known: torch.Tensor | None = None,
             lm_cols: list[int] | None = None):
        """Advance a causal model by T frames.

        mel (B, T, feature_dim), tokens (B, T) LM token ids (PAD where no word; only
        frames divisible by ``lm_stride`` are read), style (B, style_dim). With
        ``prev_pose`` (B, T, pose_dim) and ``prev_known`` (B, T) the pose history is
        given (teacher forcing, seeds); without it the model feeds back its own
        outputs frame by frame. Returns poses (B, T, pose_dim) and the new state.
        """
        if not self.cfg.causal:
            raise RuntimeError("this model was built in offline paper mode (causal=False) and cannot stream; "
                               "use a causal model or call forward_offline")
        semantic, lm_k, lm_v, lm_out = self._semantic_causal(mel, tokens, state, lm_cols)
        audio = self.audio(mel)
        if prev_pose is not None:
            if prev_known is None:
                prev_known = torch.ones(prev_pose.shape[:2], device=prev_pose.device)
            poses, conv, gru = self._generate(semantic, audio, style, prev_pose, prev_known, state.conv, state.gru)
            last_pose, last_known = poses[:, -1], torch.ones_like(state.prev_known)
        else:
            conv, gru = state.conv, state.gru
            last_pose, last_known = state.prev_pose, state.prev_known
            outputs = []
            for i in range(mel.shape[1]):
                pose, conv, gru = self._generate(semantic[:, i:i + 1], audio[:, i:i + 1], style,
                                                 last_pose.unsqueeze(1), last_known.unsqueeze(1), conv, gru)
                last_pose, last_known = pose[:, 0], torch.ones_like(last_known)
                outputs.append(pose)
            poses = torch.cat(outputs, dim=1)
        new_state = HopState(frame=state.frame + mel.shape[1], start=state.start, lm_k=lm_k, lm_v=lm_v,
                             lm_out=lm_out, conv=conv, gru=gru, prev_pose=last_pose, prev_known=last_known)
        return poses, new_state

    def forward_offline(self, mel, tokens, style, prev_pose, prev_known):
        """Whole-window generation (paper mode, or a causal model from a fresh state)."""
        if self.cfg.causal:
            poses, _ = self.step(mel, tokens, style, self.initial_state(mel.shape[0], mel.device),
                                 prev_pose, prev_known)
            return poses
        semantic = self._semantic_offline(mel, tokens)
        audio = self.audio(mel)
        conv = self.graph.initial_state(mel.shape[0], mel.device) if self.graph else ()
        poses, _, _ = self._generate(semantic, audio, style, prev_pose, prev_known, conv, None)
        return poses

    def parameter_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(b.numel() for b in self.lm.buffers()) if self.lm is not None else 0
        return {"trainable": trainable, "frozen_lm": frozen}


# ---------------------------------------------------------------------------------------
# Discriminator


class Discriminator(nn.Module):
    """Convolutional sequence discriminator: pose sequence -> one realism logit per clip."""

    def __init__(self, pose_dim: int, channels: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(pose_dim, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(2 * channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(2 * channels, 1, 3, padding=1),
        )

    def forward(self, poses: torch.Tensor) -> torch.Tensor:
        """poses (B, T, pose_dim) -> (B,) logits."""
        return self.net(poses.transpose(1, 2)).mean(dim=(1, 2))
