"""Self-describing checkpoints.

A checkpoint holds the model config (which names the skeleton, fps and Mel
options), the trainable weights and the mean pose, the identity of the frozen
LM it was trained against (its weights are not stored: they come from the LM's
own package or folder), plus whatever the trainer adds (training arguments,
metrics, optimiser state).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from .hop import Hop, HopConfig
from .lm import FrozenLM

FORMAT = "hop-live-checkpoint"
VERSION = 1

# Built-in checkpoints by name (files in model/weights/; the README states each one's data and licence).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUILTIN_CHECKPOINTS = {
    "synthetic": "synthetic.pt",  # espeak speech + rule-made motion, TED Gesture: no BEAT data, no NC terms
    "expressive": "expressive.pt",  # real BEAT/BEAT2 + Mixamo motion, TED Expressive (CC BY-NC 4.0)
}
DEFAULT_BUILTIN = "expressive"  # what hop-live loads when no --checkpoint is given


def resolve_checkpoint(name: str | os.PathLike | None) -> Path:
    """An existing path as given, a built-in checkpoint's file for one of BUILTIN_CHECKPOINTS'
    names, or (None) the default built-in one."""
    if name is None:
        return WEIGHTS_DIR / BUILTIN_CHECKPOINTS[DEFAULT_BUILTIN]
    path = Path(name)
    if not path.exists() and str(name) in BUILTIN_CHECKPOINTS:
        return WEIGHTS_DIR / BUILTIN_CHECKPOINTS[str(name)]
    return path


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path: str | os.PathLike, model: Hop, inference_only: bool = False, **extra) -> None:
    """Write atomically: a crash mid-write never leaves a truncated file under ``path``.

    ``inference_only`` stores the reprogramming prototypes instead of the V x V'
    compression that makes them (see ``Reprogramming.bake``): the file shrinks from
    ~130 MB to ~7 MB, and it can be run or exported but not trained further.
    """
    state = model.state_dict()
    baked = inference_only or (model.cfg.use_reprogramming and model.reprogram.baked)
    if baked and model.cfg.use_reprogramming and not model.reprogram.baked:
        with torch.no_grad():
            prototypes = model.reprogram.prototypes_of(model.lm.word_embeddings)
        state = {k: v for k, v in state.items() if not k.startswith("reprogram.compress.")}
        state["reprogram.prototypes"] = prototypes.contiguous()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "lm": asdict(model.lm.info) if model.lm is not None else None,
        "model": state,
        "inference_only": bool(baked and model.cfg.use_reprogramming),
        **extra,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass --checkpoint with a file "
                              "written by hop-train, or leave it out to use the built-in default")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated ({err.__class__.__name__}: "
                              f"{err}); copy it again or retrain it") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a hop-live checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {payload.get('version')}, "
                              f"this hop-live reads version {VERSION}")
    return payload


def load_checkpoint(path: str | os.PathLike, lm: FrozenLM | None = None, skeleton: str | None = None,
                    lm_spec: str | None = None, for_training: bool = False) -> tuple[Hop, dict]:
    """Build the model a checkpoint describes and load its weights.

    ``skeleton`` / ``lm`` state what the caller expects; a checkpoint made for
    something else fails with a message saying what it was made for.
    ``for_training`` refuses inference-only (baked) checkpoints, which lack the
    compression weights training needs.
    ``lm_spec`` points at a local copy of the checkpoint's LM when its original
    folder is not on this machine.
    """
    payload = read_checkpoint(path)
    cfg = HopConfig(**payload["config"])
    if for_training and payload.get("inference_only"):
        raise CheckpointError(f"checkpoint {str(path)!r} is inference-only (its reprogramming prototypes are "
                              "baked); resume training from the full checkpoint hop-train wrote (last.pt/best.pt)")
    if skeleton is not None and cfg.skeleton != skeleton:
        raise CheckpointError(f"checkpoint {str(path)!r} was trained for skeleton {cfg.skeleton!r}, "
                              f"not {skeleton!r}")
    if lm_spec is not None:
        cfg.lm = lm_spec
    model = Hop(cfg, lm=lm) if (cfg.use_lm or cfg.use_reprogramming) else Hop(cfg)
    stored_lm = payload.get("lm")
    if model.lm is not None and stored_lm is not None and stored_lm["fingerprint"] != model.lm.info.fingerprint:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with language model {stored_lm['spec']!r} "
            f"(fingerprint {stored_lm['fingerprint']}), but {model.lm.info.spec!r} has fingerprint "
            f"{model.lm.info.fingerprint}; install the language model it was trained with (the checkpoint's "
            f"config names it as lm = {stored_lm['spec']!r}) or retrain it with hop-train")
    if payload.get("inference_only") and cfg.use_reprogramming:
        model.reprogram.bake(None)
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit its own config "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval(), payload
