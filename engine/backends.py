"""How the model step runs: eager PyTorch, torch.compile, or TensorRT.

Every backend yields a ``step(mel, tokens, style, state, first_frame)`` callable
for ``HopStream``. The compiled ones run ``hop.model.export.ExplicitStep``
variants, one frame per call (static shapes), chosen by the frame number the
host tracks, so the compiled graphs never branch on tensor data. The model's
state (a pytree of tensors) crosses into them flattened (torch.utils._pytree).

* ``eager`` (default): plain PyTorch; the CPU path, real time on its own.
* ``compile``: torch.compile (Inductor) of the explicit step; CPU or CUDA.
* ``tensorrt``: torch-tensorrt (dynamo frontend) with fp16 kernels on an NVIDIA
  GPU; needs the ``gpu`` extra (``pip install -e '.[gpu]'``) and CUDA.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass

import torch

from hop.model import Hop
from hop.model.export import example_inputs, flatten_state, state_spec, step_variants, unflatten_state
from hop.profiles import LM_WEIGHTS

BACKENDS = ("eager", "compile", "tensorrt")


class BackendError(RuntimeError):
    pass


@dataclass(frozen=True)
class BackendOptions:
    name: str = "eager"
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    lm_weights: str = "fp32"  # the frozen LM's weights: fp32 | bf16 | int8 (see set_lm_weights)


def check_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda was asked for but this PyTorch sees no CUDA GPU "
                           f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"unsupported device {device!r}; use cpu or cuda")
    return dev


def prepare(model: Hop, options: BackendOptions, batch: int = 1):
    """Move the model into place and return the step callable for HopStream (None = eager default)."""
    if options.name not in BACKENDS:
        raise BackendError(f"unknown backend {options.name!r}; choose one of {', '.join(BACKENDS)}")
    device = check_device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    model.to(device).eval()
    if options.lm_weights == "int8" and (options.name != "eager" or device.type != "cpu"):
        raise BackendError("int8 LM weights run with --backend eager on the CPU only; use lm_weights = "
                           "\"bf16\" or \"fp32\" with compile, tensorrt or CUDA")
    set_lm_weights(model, options.lm_weights)
    if options.name == "eager":
        return None
    if options.name == "compile":
        compiled = [torch.compile(v, dynamic=False) for v in step_variants(model, frames=1)]
        return _frame_by_frame(compiled)
    return _frame_by_frame(_tensorrt_variants(model, device, batch))


def set_lm_weights(model: Hop, weights: str) -> None:
    """fp32 as loaded; bf16 halves the bytes each LM step reads; int8 quarters them
    (FrozenLM.quantize_int8). Only the frozen LM changes: the trained parts stay fp32.
    int8 keeps the fp32 weights beside its packed copy; bf16 replaces them, so going from
    bf16 to anything else carries bf16's rounding (reload the model for exact fp32)."""
    if weights not in LM_WEIGHTS:
        raise BackendError(f"unknown LM weight format {weights!r}; choose fp32, bf16 or int8")
    if model.lm is None:
        return
    model.lm.to(torch.float32)  # from any earlier choice back to the loaded weights
    if weights == "bf16":
        model.lm.to(torch.bfloat16)
    elif weights == "int8":
        try:
            model.lm.quantize_int8()
        except ValueError as error:
            raise BackendError(str(error)) from None


def _frame_by_frame(variants):
    """A HopStream step that runs one fixed-shape variant per frame."""

    def step(mel, tokens, style, state, first_frame):
        poses = []
        flat, spec = flatten_state(state), state_spec(state)
        for i in range(mel.shape[1]):
            out = variants[(first_frame + i) % len(variants)](mel[:, i:i + 1], tokens[:, i:i + 1], style, *flat)
            poses.append(out[0])
            flat = tuple(out[1:])
        return torch.cat(poses, dim=1), unflatten_state(flat, spec)

    return step


def _tensorrt_variants(model: Hop, device: torch.device, batch: int):
    if device.type != "cuda":
        raise BackendError("the tensorrt backend runs on NVIDIA GPUs only; add --device cuda "
                           "(or use --backend eager / compile on the CPU)")
    if importlib.util.find_spec("torch_tensorrt") is None:
        raise BackendError("torch-tensorrt is not installed; install the GPU extra with "
                           "`.venv/bin/pip install -e '.[gpu]'` (needs CUDA and a matching torch build), "
                           "or use --backend eager")
    import torch_tensorrt

    inputs = example_inputs(model, batch=batch, frames=1, device=device)
    # fp16 kernels: newer torch-tensorrt (explicit typing) takes enable_autocast,
    # older releases took enabled_precisions.
    accepted = inspect.signature(torch_tensorrt.dynamo.compile).parameters
    if "enable_autocast" in accepted:
        precision = {"enable_autocast": True, "autocast_low_precision_type": torch.float16}
    else:
        precision = {"enabled_precisions": {torch.float16, torch.float32}}
    engines = []
    for variant in step_variants(model, frames=1):
        with torch.no_grad():
            program = torch.export.export(variant, inputs)
            engines.append(torch_tensorrt.dynamo.compile(
                program, arg_inputs=list(inputs), truncate_double=True, min_block_size=1, **precision))
    return engines
