"""HOP: audio-text semantics + audio-motion rhythm -> upper-body gestures.

Reads top to bottom: the config, then the parts in the order data flows through
them (reprogramming -> frozen LM context, spatio-temporal graph encoder, style,
fusion + GRU generator), then the discriminator.

Two modes share every part:

* ``causal=True`` (streaming, the default): every part looks only at the past.
  ``Hop.step`` advances any number of pose frames and carries all state in a
  pytree of plain tensors (see "Streaming state" below), so a step can be
  traced, compiled or exported.
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
from dataclasses import asdict, dataclass, field
import weakref
from typing import Any

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


# ---------------------------------------------------------------------------------------
# Streaming state
#
# Every layer that carries something from one streaming step to the next is a
# ``Stateful`` module: it makes its own fresh state (``init_state``: a dict of
# tensors), its streaming step takes that state and returns the new one, and it
# says which dimension of each tensor is the stream (batch row). The model's
# state is the nested dict of its layers' states, keyed by module name
# (``{"graph": {"layers": {"0": {"left": ...}}}, "gru": {"h": ...}, ...}``),
# built by ``init_states`` walking the module tree: a new stateful layer appears
# in it, in ``reset_streams`` and in the exported step's inputs by itself.

HopState = dict[str, Any]  # the model's state: nested dicts of tensors, one entry per stateful layer


class Stateful:
    """Mixin for a module that carries state between streaming steps.

    ``init_state(batch, device)`` returns the module's own fresh state, a dict of
    tensors. ``state_batch_dims`` names the entries whose stream (batch)
    dimension is not 0; ``None`` marks a tensor shared by every stream, which a
    per-stream reset leaves as it is.
    """

    state_batch_dims: dict[str, int | None] = {}

    def init_state(self, batch: int, device=None) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def init_states(module: nn.Module, batch: int, device=None) -> HopState:
    """The state pytree of ``module``: its own entries if it is ``Stateful``, and under
    the name of every child that has state, the child's."""
    state = dict(module.init_state(batch, device)) if isinstance(module, Stateful) else {}
    for name, child in module.named_children():
        sub = init_states(child, batch, device)
        if sub:
            if name in state:
                raise ValueError(f"{type(module).__name__}: state entry {name!r} is also a child module's name")
            state[name] = sub
    return state


def stream_dims(module: nn.Module) -> dict:
    """The stream dimension of the state tensors whose stream dimension is not 0, as a
    partial tree shaped like ``init_states(module, ...)`` (for ``reset_streams``)."""
    dims = dict(module.state_batch_dims) if isinstance(module, Stateful) else {}
    for name, child in module.named_children():
        sub = stream_dims(child)
        if sub:
            dims[name] = sub
    return dims


def reset_streams(state: HopState, fresh: HopState, streams: torch.Tensor, batch_dims: dict | None = None) -> HopState:
    """``state`` with the rows selected by the bool mask ``streams`` (B,) taken from ``fresh``.

    Works on any state pytree; rows not selected pass through bit-identically.
    ``batch_dims`` (from ``stream_dims``) gives the stream dimension where it
    is not 0; tensors it marks ``None`` are shared by all streams and kept.
    """
    def pick(old, new, dims):
        if isinstance(old, dict):
            dims = dims if isinstance(dims, dict) else {}
            return {k: pick(v, new[k], dims.get(k, 0)) for k, v in old.items()}
        if dims is None:
            return old
        shape = [1] * old.dim()
        shape[dims] = -1
        return torch.where(streams.view(shape), new, old)

    return pick(state, fresh, batch_dims or {})


def _ordered_like(template: HopState, new: HopState, path: str = "state") -> HopState:
    """``new`` with the keys in ``template``'s order (the pytree spec of a step's output must
    equal its input's); a layer whose new state is missing or extra is an error."""
    if not isinstance(template, dict):
        return new
    if not isinstance(new, dict) or set(new) != set(template):
        have = set(new) if isinstance(new, dict) else type(new).__name__
        raise RuntimeError(f"a streaming step returned {path} with entries {have}, expected {set(template)}")
    ordered = {}
    for k in list(template.keys()):  # a plain loop: torch.compile traces it, not a comprehension over a dict
        ordered[k] = _ordered_like(template[k], new[k], f"{path}[{k!r}]")
    return ordered


class StreamClock(Stateful, nn.Module):
    """The frame clock. ``frame``: frames produced so far, one number shared by all
    streams of a batch (they advance together). ``age``: per stream, frames since
    its session began; a reset stream restarts at age 0 while the clock runs on."""

    state_batch_dims = {"frame": None}

    def init_state(self, batch: int, device=None):
        return {"frame": torch.zeros(1, dtype=torch.long, device=device),
                "age": torch.zeros(batch, dtype=torch.long, device=device)}

    @staticmethod
    def start(state) -> torch.Tensor:
        """(B,) long: the frame at which each stream's session began."""
        return state["frame"] - state["age"]

    @staticmethod
    def advance(state, frames: int):
        return {"frame": state["frame"] + frames, "age": state["age"] + frames}


class PoseFeedback(Stateful, nn.Module):
    """The last pose produced (or seeded) per stream, fed back as the next frame's history.
    ``pose`` (B, pose_dim); ``known`` (B,) float, 1 once ``pose`` holds a real pose."""

    def __init__(self, pose_dim: int):
        super().__init__()
        self.pose_dim = pose_dim

    def init_state(self, batch: int, device=None):
        return {"pose": torch.zeros(batch, self.pose_dim, device=device),
                "known": torch.zeros(batch, device=device)}


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


class LMContext(Stateful, nn.Module):
    """The frozen LM in streaming mode: which past tokens each token may attend to, and the KV cache.

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

    State: ``k``, ``v`` (B, 2 phases, layers, heads, W, head_dim), the keys and
    values of the last W tokens per phase in the LM's dtype; ``out`` (B, out_dim),
    the features of the latest token (frames without a token of their own reuse it).
    """

    def __init__(self, window: int, lm: FrozenLM, out_dim: int):
        super().__init__()
        self.window = window
        self.half = window // 2
        self.out_dim = out_dim
        object.__setattr__(self, "_lm", lm)  # the model's LM: referenced here, registered (and moved) there

    def init_state(self, batch: int, device=None):
        lm = self._lm
        shape = (batch, 2, lm.info.n_layers, lm.info.n_heads, self.window, lm.head_dim)
        dtype = lm.word_embeddings.dtype  # the LM may run in bf16 while the rest stays fp32
        return {"k": torch.zeros(shape, dtype=dtype, device=device),
                "v": torch.zeros(shape, dtype=dtype, device=device),
                "out": torch.zeros(batch, self.out_dim, device=device)}

    def step(self, x: torch.Tensor, token_no: torch.Tensor, first_token: torch.Tensor, state, head: nn.Module):
        """Run n new tokens through the LM against the cache.

        x (B, n, width) LM input embeddings; token_no (B, n) their absolute token
        numbers; first_token (B,) each stream's first token (older keys are not
        attended); ``head`` maps LM hidden states to features. Returns features
        (B, n, out_dim), one per token, and the new state.
        """
        b, n, _ = x.shape
        window = self.window
        key_no = torch.cat([token_no[:, :1] - window + torch.arange(window, device=x.device), token_no], 1)
        attend = self.attend(token_no, key_no, first_token).reshape(b * 2, n, window + n)
        positions = self.positions(token_no).reshape(b * 2, n)
        x = x.unsqueeze(1).expand(b, 2, n, x.shape[-1]).reshape(b * 2, n, -1)
        dtype = self._lm.word_embeddings.dtype
        hidden, keys, values = self._lm(x.to(dtype), positions, attend, state["k"].flatten(0, 1),
                                        state["v"].flatten(0, 1))
        hidden = hidden.float().view(b, 2, n, -1)
        phase = self.read_phase(token_no)
        hidden = torch.gather(hidden, 1, phase.view(b, 1, n, 1).expand(b, 1, n, hidden.shape[-1])).squeeze(1)
        features = head(hidden)
        return features, {"k": keys[..., keys.shape[-2] - window:, :].reshape(state["k"].shape),
                          "v": values[..., values.shape[-2] - window:, :].reshape(state["v"].shape),
                          "out": features[:, -1]}

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


class GraphLayer(Stateful, nn.Module):
    """Gated dilated causal temporal conv, skip output, diffusion over two graph supports.

    Tensors are channels-last, (B, T, N, C): a temporal tap is a time-shifted view
    and every 1x1 convolution a Linear, which is much cheaper than a dilated
    Conv2d for the few frames a streaming step carries.

    State: ``left`` (B, (kernel-1)*dilation, N, C), the latest inputs the next
    frames' taps reach back to.
    """

    def __init__(self, channels: int, kernel: int, dilation: int, supports: int, nodes: int, order: int = 2):
        super().__init__()
        self.kernel, self.dilation, self.order = kernel, dilation, order
        self.channels, self.nodes = channels, nodes
        self.context = (kernel - 1) * dilation
        self.filter_gate = nn.Linear(kernel * channels, 2 * channels)
        self.skip = nn.Linear(channels, channels)
        self.mix = nn.Linear(channels * (1 + supports * order), channels)

    def init_state(self, batch: int, device=None):
        return {"left": torch.zeros(batch, self.context, self.nodes, self.channels, device=device)}

    def forward(self, x: torch.Tensor, state, supports: list[torch.Tensor]):
        """x: (B, T, N, C) -> (x_out, skip, new state)."""
        t = x.shape[1]
        padded = torch.cat([state["left"], x], dim=1)
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
        return out, skip, {"left": padded[:, padded.shape[1] - self.context:]}


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
        self.layers = nn.ModuleList(GraphLayer(c, cfg.graph_kernel, d, supports=2, nodes=n)
                                    for d in cfg.graph_dilations)
        self.end = nn.Sequential(nn.ReLU(), nn.Linear(c, c), nn.ReLU(), nn.Linear(c, cfg.graph_out_channels))
        self.out_dim = n * cfg.graph_out_channels

    def adaptive_support(self) -> torch.Tensor:
        return torch.softmax(F.relu(self.node_source @ self.node_target.t()), dim=1)

    def forward(self, prev_pose, prev_known, audio, state):
        """prev_pose (B,T,3N), prev_known (B,T), audio (B,T,audio_dim), state (``init_states(self)``)
        -> (B,T,out_dim), new state."""
        b, t, _ = prev_pose.shape
        pose_nodes = prev_pose.view(b, t, self.nodes, 3)
        known = prev_known.view(b, t, 1, 1).expand(b, t, self.nodes, 1)
        audio_nodes = self.audio_to_nodes(audio).view(b, t, self.nodes, self.audio_channels)
        x = self.start(torch.cat([pose_nodes, known, audio_nodes], dim=-1))  # (B, T, N, C)
        supports = [self.skeleton_support, self.adaptive_support()]
        skip = 0
        layers = {}
        for name, layer in self.layers.named_children():
            x, s, layers[name] = layer(x, state["layers"][name], supports)
            skip = skip + s
        # The last layer's residual output joins the skip sum so that no layer is a dead end.
        return self.end(skip + x).reshape(b, t, self.out_dim), {"layers": layers}


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


class StreamingGRU(Stateful, nn.GRU):
    """nn.GRU (same weights, state_dict and forward) as a stateful layer: its state is the
    hidden state ``h`` (layers * directions, B, hidden), streams along dimension 1."""

    state_batch_dims = {"h": 1}

    def init_state(self, batch: int, device=None):
        directions = 2 if self.bidirectional else 1
        return {"h": torch.zeros(self.num_layers * directions, batch, self.hidden_size, device=device)}


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
        self.semantic = nn.Linear(width, cfg.semantic_dim)
        # Layers that carry state between streaming steps (besides the graph layers and the GRU).
        # The state's entries follow the order modules are registered in.
        self.clock = StreamClock()
        self.lm_context = LMContext(cfg.lm_window, self.lm, cfg.semantic_dim) if cfg.use_lm else None
        self.feedback = PoseFeedback(cfg.pose_dim)
        self.graph = GraphEncoder(cfg) if cfg.use_graph else None
        self.style = StyleEncoder(cfg.n_speakers, cfg.style_dim)
        fused_in = cfg.semantic_dim + cfg.audio_dim + cfg.style_dim + (self.graph.out_dim if self.graph else 0)
        self.fuse = nn.Sequential(nn.Linear(fused_in, cfg.fusion_dim), nn.GELU(), nn.Dropout(cfg.dropout))
        self.gru = StreamingGRU(cfg.fusion_dim, cfg.gru_hidden, cfg.gru_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0, bidirectional=not cfg.causal)
        self.head = nn.Linear(cfg.gru_hidden * (1 if cfg.causal else 2), cfg.pose_dim)

    # -- state ---------------------------------------------------------------------------

    def initial_state(self, batch: int, device=None) -> HopState:
        """Fresh state for ``batch`` streams: one entry per stateful layer, keyed by module name."""
        return init_states(self, batch, device or self.mean_pose.device)

    def reset_state(self, state: HopState, streams: torch.Tensor) -> HopState:
        """Restart the streams selected by the bool mask ``streams`` (B,) at the current frame.

        The batch clock keeps running; rows not selected pass through bit-identically.
        """
        fresh = self.initial_state(streams.shape[0], streams.device)
        return reset_streams(state, fresh, streams, stream_dims(self))

    def with_prev_pose(self, state: HopState, pose: torch.Tensor, known: torch.Tensor | None = None,
                       streams: torch.Tensor | None = None) -> HopState:
        """``state`` continuing from ``pose`` (B, pose_dim) or (pose_dim,), normalised, as the last
        pose; ``known`` (B,) says where it is real (default: everywhere). ``streams``: a bool
        mask (B,) of the streams to change (default: all)."""
        current = state["feedback"]
        seeded = {"pose": pose.to(current["pose"].dtype).expand_as(current["pose"]).contiguous(),
                  "known": torch.ones_like(current["known"]) if known is None
                  else known.to(current["known"].dtype).expand_as(current["known"]).contiguous()}
        if streams is not None:
            seeded = reset_streams(current, seeded, streams)
        return {**state, "feedback": seeded}

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

    def _semantic_offline(self, mel, tokens):
        """Paper mode: one bidirectional LM pass over the whole window."""
        lm_in = self._lm_input(mel, tokens)
        if not self.cfg.use_lm:
            return self.semantic(lm_in)
        b, t, _ = lm_in.shape
        positions = torch.arange(t, device=mel.device).expand(b, t)
        attend = torch.ones(b, t, t, dtype=torch.bool, device=mel.device)
        dtype = self.lm.word_embeddings.dtype  # the LM may run in bf16 while the rest stays fp32
        return self.semantic(self.lm(lm_in.to(dtype), positions, attend)[0].float())

    def lm_columns(self, first_frame: int, frames: int) -> list[int]:
        """Which of ``frames`` frames starting at ``first_frame`` carry an LM token."""
        return [i for i in range(frames) if (first_frame + i) % self.cfg.lm_stride == 0]

    def _semantic_causal(self, mel, tokens, clock, state, lm_cols: list[int] | None = None):
        """Per-frame semantic features from the LM tokens of this chunk, and the LM context's new state.

        ``lm_cols`` (from ``lm_columns``) may be given by a caller that tracks the
        batch clock itself, so that no value is read back from the state tensors
        (a traced or exported step must not branch on tensor data).
        """
        cfg = self.cfg
        b, t, _ = mel.shape
        if not cfg.use_lm:
            return self.semantic(self._lm_input(mel, tokens)), state
        stride = cfg.lm_stride
        if lm_cols is None:
            lm_cols = self.lm_columns(int(clock["frame"][0]), t)  # the batch clock: the same in every row
        outputs = state["out"].unsqueeze(1)
        if lm_cols:
            cols = torch.tensor(lm_cols, device=mel.device)
            lm_in = self._lm_input(mel[:, cols], tokens[:, cols])
            token_no = torch.div(clock["frame"].unsqueeze(1) + cols, stride, rounding_mode="floor")
            token_no = token_no.expand(b, len(lm_cols))
            first_token = torch.div(StreamClock.start(clock) + stride - 1, stride, rounding_mode="floor")
            features, state = self.lm_context.step(lm_in, token_no, first_token, state, self.semantic)
            outputs = torch.cat([outputs, features], dim=1)
        # Frame i uses the newest LM output at or before it (index 0 = carried from the last call).
        latest, source = 0, []
        for i in range(t):
            if lm_cols and latest < len(lm_cols) and lm_cols[latest] == i:
                latest += 1
            source.append(latest)
        return outputs[:, source], state

    def _generate(self, semantic, audio, style, prev_pose, prev_known, state):
        """Graph encoder + fusion + GRU + head over T frames whose pose history is known.

        ``state`` holds (at least) the graph encoder's and the GRU's entries (the GRU's may be
        None: zeros); returns poses and their new entries."""
        t = semantic.shape[1]
        parts = [semantic, audio, style.unsqueeze(1).expand(-1, t, -1)]
        new = {}
        if self.graph is not None:
            rhythm, new["graph"] = self.graph(prev_pose, prev_known, audio, state["graph"])
            parts.insert(1, rhythm)
        # nn.GRU's own forward (torch.compile breaks its graph at an RNN: keep that the only break here)
        hidden, h = self.gru(self.fuse(torch.cat(parts, dim=-1)), None if state["gru"] is None else state["gru"]["h"])
        new["gru"] = {"h": h}
        return self.head(hidden), new

    # -- public entry points ---------------------------------------------------------------

    def step(self, mel: torch.Tensor, tokens: torch.Tensor, style: torch.Tensor, state: HopState,
             prev_pose: torch.Tensor | None = None, prev_known: torch.Tensor | None = None,
             lm_cols: list[int] | None = None):
        """Advance a causal model by T frames.

        mel (B, T, feature_dim), tokens (B, T) LM token ids (PAD where no word; only
        frames divisible by ``lm_stride`` are read), style (B, style_dim). With
        ``prev_pose`` (B, T, pose_dim) and ``prev_known`` (B, T) the pose history is
        given (teacher forcing, seeds); without it the model feeds back its own
        outputs frame by frame. Returns poses (B, T, pose_dim) and the new state
        (the same pytree structure as ``state``).
        """
        if not self.cfg.causal:
            raise RuntimeError("this model was built in offline paper mode (causal=False) and cannot stream; "
                               "use a causal model or call forward_offline")
        t = mel.shape[1]
        clock = state["clock"]
        new = {"clock": StreamClock.advance(clock, t)}
        if self.lm_context is not None:
            semantic, new["lm_context"] = self._semantic_causal(mel, tokens, clock, state["lm_context"], lm_cols)
        else:
            semantic, _ = self._semantic_causal(mel, tokens, clock, None, lm_cols)
        audio = self.audio(mel)
        feedback = state["feedback"]
        if prev_pose is not None:
            if prev_known is None:
                prev_known = torch.ones(prev_pose.shape[:2], device=prev_pose.device)
            poses, generated = self._generate(semantic, audio, style, prev_pose, prev_known, state)
            new["feedback"] = {"pose": poses[:, -1], "known": torch.ones_like(feedback["known"])}
        else:
            current, last = state, feedback
            outputs = []
            for i in range(t):
                pose, generated = self._generate(semantic[:, i:i + 1], audio[:, i:i + 1], style,
                                                 last["pose"].unsqueeze(1), last["known"].unsqueeze(1), current)
                current = {**current, **generated}
                last = {"pose": pose[:, 0], "known": torch.ones_like(last["known"])}
                outputs.append(pose)
            poses = torch.cat(outputs, dim=1)
            new["feedback"] = last
        new.update(generated)
        return poses, _ordered_like(state, new)

    def forward_offline(self, mel, tokens, style, prev_pose, prev_known):
        """Whole-window generation (paper mode, or a causal model from a fresh state)."""
        if self.cfg.causal:
            poses, _ = self.step(mel, tokens, style, self.initial_state(mel.shape[0], mel.device),
                                 prev_pose, prev_known)
            return poses
        semantic = self._semantic_offline(mel, tokens)
        audio = self.audio(mel)
        state = {"graph": init_states(self.graph, mel.shape[0], mel.device) if self.graph else None, "gru": None}
        poses, _ = self._generate(semantic, audio, style, prev_pose, prev_known, state)
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
