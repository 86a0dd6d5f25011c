"""Train HOP (generator + discriminator) on hop-clips corpora.

    python training/train.py --config training/configs/synthetic_cpu.toml [--out runs/x]
    hop-train --config training/configs/paper.toml --set train.batch_size=64 --set data.train=/data/ted/train
    hop-train --config ... --resume runs/x/last.pt          # continue (also after Ctrl-C)
    torchrun --standalone --nproc_per_node 4 -m hop.training.train --config ...   # DistributedDataParallel

Loss = huber_weight * Huber(pose) + style_weight * diversity(two speaker styles)
       + kld_weight * KLD(style posterior) + gan_weight * adversarial (after gan_warmup_epochs,
       ramped in over gan_ramp_epochs) [+ velocity_weight * Huber(frame-to-frame change)].

The discriminator can be kept from overpowering the generator (which made it collapse
to a near-static pose once the adversarial term started) with an R1 penalty
(``r1_weight``: gamma/2 * |grad_x D(x)|^2 at real clips) and/or spectral normalisation
of its convolutions (``disc_spectral_norm``).

Modes follow ``model.causal``:
* offline (paper, causal = false): bidirectional GRU/LM over the window, the first
  ``data.seed_frames`` poses given, the rest unknown to the model.
* streaming (causal = true): the model is trained on a pose history that it will
  really see when it runs on its own outputs: ground truth plus Gaussian noise
  (``teacher_noise``), and with probability p per frame its own free-running
  prediction instead (scheduled sampling, p rising linearly to ``sampling_max``
  over ``sampling_ramp_epochs``).

The run directory gets train_log.csv, val_log.csv (and TensorBoard events if the
``tensorboard`` package is installed), last.pt, best.pt (full, resumable),
inference.pt (best weights, no optimiser state, reprogramming prototypes baked: what
hop-live loads), config.toml, losses.png and metrics.png. Checkpoints are hop.model checkpoints (self-describing) with the
optimiser states added, so ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import math
import os
import random
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python training/train.py
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hop.model import CheckpointError, Discriminator, FrozenLM, Hop, HopConfig, load_checkpoint, save_checkpoint
from hop.model import load_tokenizer
from hop.training.dataset import Corpus, WindowDataset
from hop.training.evaluate import (evaluate_standard, evaluate_streaming, seed_history, teacher_history)

# --------------------------------------------------------------------------------------
# Configuration


@dataclass
class DataConfig:
    train: str = ""  # hop-clips corpus directory
    val: str = ""  # held-out corpus; empty: the same corpus, clips of val_split or a held-out fraction
    train_split: str = "train"  # used when the manifest records splits (source.split); ignored otherwise
    val_split: str = "val"
    val_fraction: float = 0.1  # when the corpus records no splits and no val corpus is given
    window: int = 34
    stride: int = 10
    seed_frames: int = 4
    filter: bool = False  # apply the published TED window filters (words, spine, static wrists, mean pose)
    max_clips: int = 0  # 0: all


@dataclass
class TrainConfig:
    epochs: int = 75
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    batch_size: int = 128
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    disc_lr: float = 1e-4
    huber_weight: float = 500.0
    huber_delta: float = 0.1
    style_weight: float = 0.05
    kld_weight: float = 0.1
    gan_weight: float = 5.0
    gan_warmup_epochs: float = 10.0
    gan_ramp_epochs: float = 0.0  # after the warm-up the adversarial weight rises linearly to gan_weight over this
    r1_weight: float = 0.0  # R1 penalty (gamma) on the discriminator's gradient at real clips (0: off)
    disc_spectral_norm: bool = False  # spectral normalisation of the discriminator's convolutions
    velocity_weight: float = 0.0  # Huber on frame-to-frame pose differences (motion, not just poses)
    grad_clip: float = 0.0  # 0: off
    teacher_noise: float = 0.02  # streaming: std of the noise added to fed-back ground truth
    sampling_max: float = 0.5  # streaming: final probability of feeding back the model's own pose
    sampling_ramp_epochs: float = 20.0
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    amp: str = "none"  # none, bf16, fp16 (CUDA only)
    threads: int = 0  # torch CPU threads; 0: torch's default


@dataclass
class EvalConfig:
    every_epochs: int = 1
    max_windows: int = 512
    fgd_ae: str = ""  # autoencoder from hop-train-fgd-ae; FGD/Diversity are skipped without it
    streaming: bool = False  # also run the streaming protocol at each validation (causal models)
    max_clips: int = 16
    best_metric: str = "auto"  # auto: fgd if an autoencoder is given, else val_huber (lower is better)


@dataclass
class LogConfig:
    out_dir: str = "runs/hop"
    progress: bool = True
    tensorboard: bool = True
    every_steps: int = 10
    plots: bool = True


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=dict)  # HopConfig fields
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train"]["betas"] = list(d["train"]["betas"])
        return d


def _section(cls, values: dict, name: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) in [{name}]: {unknown}; known: {sorted(known)}")
    obj = cls(**values)
    if hasattr(obj, "betas"):
        obj.betas = tuple(float(b) for b in obj.betas)
    return obj


def config_from_dict(raw: dict) -> RunConfig:
    unknown = sorted(set(raw) - {"data", "model", "train", "eval", "log"})
    if unknown:
        raise ValueError(f"unknown config section(s) {unknown}; use [data], [model], [train], [eval], [log]")
    model = dict(raw.get("model", {}))
    known = {f.name for f in dataclasses.fields(HopConfig)}
    bad = sorted(set(model) - known)
    if bad:
        raise ValueError(f"unknown key(s) in [model]: {bad}; known: {sorted(known)}")
    return RunConfig(data=_section(DataConfig, raw.get("data", {}), "data"), model=model,
                     train=_section(TrainConfig, raw.get("train", {}), "train"),
                     eval=_section(EvalConfig, raw.get("eval", {}), "eval"),
                     log=_section(LogConfig, raw.get("log", {}), "log"))


def apply_override(raw: dict, assignment: str) -> None:
    """``section.key=value`` with a TOML value (bare words are taken as strings)."""
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise ValueError(f"--set expects section.key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    section, name = key.strip().split(".", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    raw.setdefault(section, {})[name] = parsed


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    raw = {}
    if path:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        base = Path(path).resolve().parent
        for key in ("train", "val"):  # relative corpus paths are relative to the config file
            v = raw.get("data", {}).get(key)
            if v and not Path(v).is_absolute() and not Path(v).exists() and (base / v).exists():
                raw["data"][key] = str(base / v)
    for o in overrides:
        apply_override(raw, o)
    return config_from_dict(raw)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)


def dump_toml(d: dict) -> str:
    lines = []
    for section, values in d.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Distributed, devices, seeds


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device_pref == "auto":
        device_pref = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_pref.startswith("cuda"):
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
            dist.init_process_group("nccl")
        else:
            device = torch.device("cpu")
            dist.init_process_group("gloo")
        return Dist(dist.get_rank(), dist.get_world_size(), local), device
    device = torch.device(device_pref)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("hop-train: train.device asks for CUDA but torch sees no GPU; use device = \"cpu\"")
    return Dist(), device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def autocast_context(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise SystemExit(f"hop-train: train.amp = {amp!r} needs CUDA; use amp = \"none\" on {device.type}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise SystemExit(f"hop-train: train.amp must be none, bf16 or fp16, not {amp!r}")
    return torch.autocast("cuda", dtype=dtype)


# --------------------------------------------------------------------------------------
# The generator pass (one nn.Module call, so that DistributedDataParallel can wrap it)


class GeneratorPass(nn.Module):
    """Style sampling + generation; with ``speaker2`` a second pass under another speaker's style
    runs in the same call (batched), for the style/diversity regulariser."""

    def __init__(self, model: Hop):
        super().__init__()
        self.model = model

    def forward(self, mel, tokens, speaker, prev_pose, prev_known, speaker2=None):
        z, mu, logvar = self.model.style(speaker)
        if speaker2 is None:
            return self.model.forward_offline(mel, tokens, z, prev_pose, prev_known), None, z, None, mu, logvar
        z2, _, _ = self.model.style(speaker2)
        out = self.model.forward_offline(torch.cat([mel, mel]), torch.cat([tokens, tokens]), torch.cat([z, z2]),
                                         torch.cat([prev_pose, prev_pose]), torch.cat([prev_known, prev_known]))
        out1, out2 = out.chunk(2)
        return out1, out2, z, z2, mu, logvar


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def diversity_loss(out1, out2, z1, z2) -> torch.Tensor:
    """Negative pose distance per unit of style distance (clamped): rewards styles that change the motion."""
    pose_l1 = (out1 - out2).abs().mean(dim=(1, 2))
    z_l1 = (z1.detach() - z2.detach()).abs().mean(dim=1)
    return torch.clamp(-(pose_l1 / (z_l1 + 1e-5)), min=-1000.0).mean()


# --------------------------------------------------------------------------------------
# The trainer


VAL_KEYS = ["epoch", "step", "val_huber", "fgd", "bc", "bc_real", "diversity", "diversity_real", "mae",
            "stream_fgd", "stream_bc", "stream_diversity", "stream_mae", "stream_wrist_speed_ratio",
            "stream_arm_spread_ratio"]
TRAIN_KEYS = ["step", "epoch", "loss", "loss_huber", "loss_style", "loss_kld", "loss_gan", "loss_velocity",
              "d_loss", "d_r1", "gan_w", "sampling_p", "samples_per_s", "lr"]


class CsvLog:
    def __init__(self, path: Path, keys: list[str], append: bool):
        self.path, self.keys = path, keys
        new = not (append and path.exists())
        self.file = open(path, "a" if not new else "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=keys, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.keys})
        self.file.flush()

    def close(self):
        self.file.close()


class Trainer:
    def __init__(self, cfg: RunConfig, out_dir: Path | None = None, resume: str | None = None,
                 dist: Dist | None = None, device: torch.device | None = None, lm: FrozenLM | None = None):
        self.cfg = cfg
        if dist is None or device is None:
            dist, device = setup_distributed(cfg.train.device)
        self.dist, self.device = dist, device
        self.out_dir = Path(out_dir or cfg.log.out_dir)
        tc = cfg.train
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        seed_everything(tc.seed + dist.rank)
        if not cfg.data.train:
            raise SystemExit("hop-train: no training corpus; set data.train in the config or --set data.train=DIR")

        # --- model (fresh or from the checkpoint being resumed) ---
        from hop.training.data.clips import read_manifest

        manifest = read_manifest(cfg.data.train)
        payload = None
        if resume:
            self.model, payload = self._load_for_resume(resume, manifest, lm)
        else:
            mcfg = dict(cfg.model)
            if "fps" in mcfg and mcfg["fps"] != manifest.fps:
                raise SystemExit(f"hop-train: [model] fps = {mcfg['fps']} but corpus {cfg.data.train} is "
                                 f"{manifest.fps} fps")
            mcfg["fps"] = manifest.fps
            if mcfg.get("skeleton", manifest.skeleton) != manifest.skeleton:
                raise SystemExit(f"hop-train: [model] skeleton = {mcfg['skeleton']!r} but corpus "
                                 f"{cfg.data.train} holds {manifest.skeleton!r} clips")
            mcfg["skeleton"] = manifest.skeleton
            if mcfg.get("n_speakers", 0) < len(manifest.speakers):
                mcfg["n_speakers"] = max(1, len(manifest.speakers))
            hcfg = HopConfig(**mcfg)
            needs_lm = hcfg.use_lm or hcfg.use_reprogramming
            self.model = Hop(hcfg, lm=(lm or FrozenLM(hcfg.lm)) if needs_lm else None)
            with torch.no_grad():
                self.model.mean_pose.copy_(torch.as_tensor(manifest.mean_dir_vec, dtype=torch.float32))
        self.model.to(device).train()
        self.hcfg = self.model.cfg
        self.streaming = self.hcfg.causal

        # --- data ---
        pieces = None
        if self.model.lm is not None:
            from hop.model.text import WordPieces

            pieces = WordPieces(load_tokenizer(self.hcfg.lm))
        pad = self.model.lm.info.pad_token_id if self.model.lm is not None else 0
        dc = cfg.data
        def split_ids(root, split):
            entries = read_manifest(root).clips
            if split and any("split" in e.source for e in entries):
                return [e.id for e in entries if e.source.get("split") == split]
            return [e.id for e in entries]

        train_ids = split_ids(dc.train, dc.train_split)
        if dc.val:
            val_ids = split_ids(dc.val, dc.val_split)
        elif dc.val_split and any("split" in e.source for e in manifest.clips):
            val_ids = split_ids(dc.train, dc.val_split)
        else:
            order = np.random.default_rng(tc.seed).permutation(len(train_ids))
            n_val = max(1, int(round(dc.val_fraction * len(train_ids)))) if len(train_ids) > 1 else 0
            val_ids = [train_ids[k] for k in order[:n_val]]
            train_ids = [train_ids[k] for k in sorted(order[n_val:])]
        if dc.max_clips:
            train_ids = train_ids[:dc.max_clips]
        self.train_corpus = Corpus(dc.train, train_ids, self.hcfg.mel, pieces, pad)
        self.val_corpus = Corpus(dc.val or dc.train, val_ids, self.hcfg.mel, pieces, pad) if val_ids else None
        for c in (self.train_corpus, self.val_corpus):
            if c is not None and c.skeleton.name != self.hcfg.skeleton:
                raise SystemExit(f"hop-train: corpus {c.root} holds {c.skeleton.name!r} clips, the model is "
                                 f"{self.hcfg.skeleton!r}")
        self.train_ds = WindowDataset(self.train_corpus, dc.window, dc.stride, dc.filter)
        self.val_ds = WindowDataset(self.val_corpus, dc.window, dc.stride) if self.val_corpus else None
        if len(self.train_ds) == 0:
            raise SystemExit(f"hop-train: no {dc.window}-frame training windows in {dc.train}")
        bs = min(tc.batch_size, len(self.train_ds) // dist.world)
        self.batch_size = max(1, bs)
        self.steps_per_epoch = max(1, len(self.train_ds) // (self.batch_size * dist.world))

        # --- discriminator, optimisers, scalers ---
        self.disc = Discriminator(self.hcfg.pose_dim)
        if tc.disc_spectral_norm:
            from torch.nn.utils.parametrizations import spectral_norm

            for k, layer in enumerate(self.disc.net):
                if isinstance(layer, nn.Conv1d):
                    self.disc.net[k] = spectral_norm(layer)
        self.disc = self.disc.to(device)
        self.gen_pass = GeneratorPass(self.model)
        self.gen_ddp, self.disc_ddp = self.gen_pass, self.disc
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.gen_ddp = DDP(self.gen_pass, device_ids=ids)
            self.disc_ddp = DDP(self.disc, device_ids=ids)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(params, lr=tc.lr, betas=tc.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=tc.disc_lr, betas=tc.betas)
        fp16 = tc.amp == "fp16"
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
        autocast_context(device, tc.amp)  # fail now, not at the first step, on a bad amp setting
        self.autocast = lambda: autocast_context(device, tc.amp)

        self.epoch, self.batches_done, self.global_step = 0, 0, 0
        self.best = math.inf
        self.metrics: dict = {}
        self.extractor = None
        if cfg.eval.fgd_ae:
            from hop.training.motion_ae import load_motion_ae

            self.extractor = load_motion_ae(cfg.eval.fgd_ae, self.hcfg.skeleton)
        self.best_metric = cfg.eval.best_metric
        if self.best_metric == "auto":
            self.best_metric = "fgd" if self.extractor is not None else "val_huber"
        if payload is not None:
            self._restore(payload)

    # -- checkpoints ---------------------------------------------------------------------

    def _load_for_resume(self, path, manifest, lm):
        cfg = self.cfg
        want_lm = cfg.model.get("lm")
        lm_obj = lm
        try:
            from hop.model.checkpoint import read_checkpoint

            stored = read_checkpoint(path)["config"]
            spec = want_lm or stored.get("lm")
            if lm_obj is None and (stored.get("use_lm", True) or stored.get("use_reprogramming", True)):
                lm_obj = FrozenLM(spec)
            model, payload = load_checkpoint(path, lm=lm_obj, skeleton=manifest.skeleton, for_training=True)
        except CheckpointError as err:
            raise SystemExit(f"hop-train: cannot resume: {err}") from err
        # The checkpoint's own config is the model; a [model] key that contradicts it is an error.
        stored_cfg = model.cfg.to_dict()
        clashes = {k: (v, stored_cfg.get(k)) for k, v in cfg.model.items()
                   if k != "lm" and _normal(stored_cfg.get(k)) != _normal(v)
                   and not (k == "n_speakers" and v <= stored_cfg["n_speakers"])}  # raised to the corpus's count
        if clashes:
            detail = ", ".join(f"{k}: config {a!r} vs checkpoint {b!r}" for k, (a, b) in clashes.items())
            raise SystemExit(f"hop-train: cannot resume {path}: the [model] section differs from the checkpoint "
                             f"({detail}); resume with the config the run was started with")
        if model.cfg.fps != manifest.fps:
            raise SystemExit(f"hop-train: cannot resume {path}: it was trained at {model.cfg.fps} fps, corpus "
                             f"{cfg.data.train} is {manifest.fps} fps")
        return model, payload

    def _restore(self, payload: dict) -> None:
        state = payload.get("trainer")
        if not state:
            raise SystemExit("hop-train: this checkpoint has no trainer state (optimisers, step); "
                             "it cannot be resumed, only fine-tuned from")
        self.disc.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        self.epoch, self.batches_done = state["epoch"], state["batches_done"]
        self.global_step, self.best = state["global_step"], state["best"]
        self.metrics = payload.get("metrics", {})
        if state.get("rng_cpu") is not None:
            torch.set_rng_state(state["rng_cpu"])

    def save(self, name: str) -> Path:
        path = self.out_dir / name
        if not self.dist.main:
            return path
        trainer_state = {
            "discriminator": self.disc.state_dict(), "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(), "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(), "epoch": self.epoch, "batches_done": self.batches_done,
            "global_step": self.global_step, "best": self.best, "rng_cpu": torch.get_rng_state(),
        }
        save_checkpoint(path, self.model, trainer=trainer_state, train_args=self.cfg.to_dict(),
                        metrics={k: float(v) for k, v in self.metrics.items()},
                        skeleton=self.hcfg.skeleton, fps=self.hcfg.fps,
                        mean_dir_vec=[float(v) for v in self.model.mean_pose.tolist()],
                        mode="streaming" if self.streaming else "offline",
                        hop_live_version=_version())
        return path

    def export_inference(self) -> Path:
        """inference.pt: the best weights (else the last) without optimiser state, prototypes baked (small)."""
        source = self.out_dir / ("best.pt" if (self.out_dir / "best.pt").exists() else "last.pt")
        model = self.model
        if source.exists():
            model, _ = load_checkpoint(source, lm=self.model.lm, for_training=True)
        path = self.out_dir / "inference.pt"
        save_checkpoint(path, model, inference_only=True, train_args=self.cfg.to_dict(),
                        metrics={k: float(v) for k, v in self.metrics.items()}, skeleton=self.hcfg.skeleton,
                        fps=self.hcfg.fps, mean_dir_vec=[float(v) for v in model.mean_pose.tolist()],
                        mode="streaming" if self.streaming else "offline", exported_from=source.name)
        return path

    # -- one step -----------------------------------------------------------------------

    def sampling_p(self) -> float:
        tc = self.cfg.train
        if not self.streaming or tc.sampling_max <= 0:
            return 0.0
        progress = (self.global_step / self.steps_per_epoch) / max(tc.sampling_ramp_epochs, 1e-9)
        return float(min(1.0, progress) * tc.sampling_max)

    def pose_history(self, batch: dict):
        poses, before, has_before = batch["poses"], batch["before"], batch["has_before"]
        if not self.streaming:
            return seed_history(poses, before, has_before, self.cfg.data.seed_frames)
        prev, known = teacher_history(poses, before, has_before)
        tc = self.cfg.train
        if tc.teacher_noise > 0:
            prev = prev + tc.teacher_noise * torch.randn_like(prev)
        p = self.sampling_p()
        if p > 0:
            with torch.no_grad(), self.autocast():
                b = poses.shape[0]
                state = self.model.initial_state(b, poses.device)
                state = self.model.with_prev_pose(state, before, has_before)
                z, _, _ = self.model.style(batch["speaker"])
                free, _ = self.model.step(batch["mel"], batch["tokens"], z, state)
            own = torch.cat([before.unsqueeze(1), free[:, :-1].float()], dim=1)
            use_own = (torch.rand(poses.shape[:2], device=poses.device) < p).unsqueeze(-1)
            use_own[:, 0] = False
            prev = torch.where(use_own, own, prev)
        return prev, known

    def train_step(self, batch: dict) -> dict:
        tc = self.cfg.train
        poses = batch["poses"]
        prev, known = self.pose_history(batch)
        speaker2 = None
        if tc.style_weight > 0:
            speaker2 = torch.roll(batch["speaker"], 1)
        with self.autocast():
            out, out2, z, z2, mu, logvar = self.gen_ddp(batch["mel"], batch["tokens"], batch["speaker"], prev, known,
                                                         speaker2)
        out, poses = out.float(), poses.float()
        gan_w = self.gan_weight_now()
        gan_on = gan_w > 0
        # discriminator
        d_loss = torch.zeros((), device=poses.device)
        r1 = torch.zeros((), device=poses.device)
        if tc.gan_weight > 0:
            with self.autocast():
                logits = self.disc_ddp(torch.cat([poses, out.detach()])).float()
            labels = torch.cat([torch.ones(len(poses)), torch.zeros(len(poses))]).to(logits.device)
            d_loss = F.binary_cross_entropy_with_logits(logits, labels)
            d_total = d_loss
            if tc.r1_weight > 0:
                real = poses.detach().requires_grad_(True)
                with self.autocast():
                    real_logits = self.disc_ddp(real).float()
                grad, = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                d_total = d_loss + 0.5 * tc.r1_weight * r1
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(d_total).backward()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
        # generator
        huber = F.smooth_l1_loss(out, poses, beta=tc.huber_delta)
        kld = kld_loss(mu.float(), logvar.float())
        style = diversity_loss(out, out2.float(), z.float(), z2.float()) if out2 is not None else torch.zeros_like(huber)
        gan = torch.zeros_like(huber)
        if gan_on:
            with self.autocast():
                gan = F.binary_cross_entropy_with_logits(self.disc_ddp(out).float(), torch.ones(len(out),
                                                                                                device=out.device))
        velocity = torch.zeros_like(huber)
        if tc.velocity_weight > 0:
            velocity = F.smooth_l1_loss(out[:, 1:] - out[:, :-1], poses[:, 1:] - poses[:, :-1], beta=tc.huber_delta)
        loss = (tc.huber_weight * huber + tc.style_weight * style + tc.kld_weight * kld + gan_w * gan
                + tc.velocity_weight * velocity)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.global_step} "
                                     f"(huber {huber.item()}, kld {kld.item()}, style {style.item()}); "
                                     "lower train.lr or use train.grad_clip")
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss).backward()
        if tc.grad_clip > 0:
            self.scaler_g.unscale_(self.opt_g)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        return {"loss": loss.item(), "loss_huber": huber.item(), "loss_style": style.item(),
                "loss_kld": kld.item(), "loss_gan": gan.item(), "loss_velocity": velocity.item(),
                "d_loss": d_loss.item(), "d_r1": r1.item(), "gan_w": gan_w}

    def gan_weight_now(self) -> float:
        """0 during the warm-up, then rising linearly to gan_weight over gan_ramp_epochs."""
        tc = self.cfg.train
        epochs = self.global_step / self.steps_per_epoch
        if tc.gan_weight <= 0 or epochs < tc.gan_warmup_epochs:
            return 0.0
        if tc.gan_ramp_epochs <= 0:
            return float(tc.gan_weight)
        return float(tc.gan_weight * min(1.0, (epochs - tc.gan_warmup_epochs) / tc.gan_ramp_epochs))

    # -- validation -------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict:
        if self.val_ds is None or len(self.val_ds) == 0:
            return {}
        ec = self.cfg.eval
        self.model.eval()
        from hop.training.evaluate import _collate, _subset

        idx = _subset(len(self.val_ds), ec.max_windows)
        total, n = 0.0, 0
        for k in range(0, len(idx), self.batch_size):
            batch = _collate(self.val_ds, idx[k:k + self.batch_size], self.device)
            if self.streaming:
                prev, known = teacher_history(batch["poses"], batch["before"], batch["has_before"])
            else:
                prev, known = seed_history(batch["poses"], batch["before"], batch["has_before"],
                                           self.cfg.data.seed_frames)
            style = torch.zeros(len(prev), self.hcfg.style_dim, device=self.device)
            with self.autocast():
                out = self.model.forward_offline(batch["mel"], batch["tokens"], style, prev, known).float()
            total += F.smooth_l1_loss(out, batch["poses"], beta=self.cfg.train.huber_delta,
                                      reduction="sum").item() / out[0].numel()
            n += len(out)
        result = {"val_huber": total / max(n, 1)}
        std = evaluate_standard(self.model, self.val_ds, self.extractor, self.cfg.data.seed_frames,
                                self.batch_size, ec.max_windows, self.device)
        result.update({k: v for k, v in std.items() if k in VAL_KEYS})
        if ec.streaming and self.streaming:
            st = evaluate_streaming(self.model, self.val_corpus, self.extractor, self.cfg.data.window,
                                    self.cfg.data.stride, ec.max_clips, self.device)
            result.update({f"stream_{k}": v for k, v in st.items() if f"stream_{k}" in VAL_KEYS})
        self.model.train()
        return result

    # -- the loop ---------------------------------------------------------------------------

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng(self.cfg.train.seed * 1000003 + epoch).permutation(len(self.train_ds))
        per_rank = len(order) // self.dist.world
        mine = order[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank] if self.dist.world > 1 else order
        return [mine[k * self.batch_size:(k + 1) * self.batch_size] for k in range(self.steps_per_epoch)]

    def _batch(self, idx) -> dict:
        items = [self.train_ds[int(k)] for k in idx]
        return {key: torch.stack([it[key] for it in items]).to(self.device, non_blocking=True) for key in items[0]}

    def fit(self) -> dict:
        cfg, tc, lc = self.cfg, self.cfg.train, self.cfg.log
        main = self.dist.main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.toml").write_text(dump_toml(cfg.to_dict()))
        append = self.global_step > 0
        tlog = CsvLog(self.out_dir / "train_log.csv", TRAIN_KEYS, append) if main else None
        vlog = CsvLog(self.out_dir / "val_log.csv", VAL_KEYS, append) if main else None
        tb = self._tensorboard() if main and lc.tensorboard else None
        if main:
            counts = self.model.parameter_counts()
            print(f"hop-train: {'streaming (causal)' if self.streaming else 'offline (paper)'} mode, "
                  f"{len(self.train_ds)} train windows, {len(self.val_ds) if self.val_ds else 0} val windows, "
                  f"batch {self.batch_size} x {self.dist.world}, {self.steps_per_epoch} steps/epoch, "
                  f"{counts['trainable'] / 1e6:.2f} M trainable params, device {self.device}", flush=True)
        from tqdm import tqdm

        interrupted = False
        try:
            while self.epoch < tc.epochs and not self._done():
                batches = self._epoch_batches(self.epoch)
                bar = tqdm(total=len(batches), initial=self.batches_done, desc=f"epoch {self.epoch + 1}/{tc.epochs}",
                           disable=not (main and lc.progress), dynamic_ncols=True, leave=False)
                window_t, window_n, rate = time.perf_counter(), 0, 0.0
                while self.batches_done < len(batches) and not self._done():
                    batch = self._batch(batches[self.batches_done])
                    losses = self.train_step(batch)
                    self.batches_done += 1
                    self.global_step += 1
                    window_n += len(batches[0]) * self.dist.world
                    elapsed = time.perf_counter() - window_t
                    if elapsed > 0.5 or self.global_step % lc.every_steps == 0:
                        rate = window_n / max(elapsed, 1e-9)
                    bar.set_postfix(loss=f"{losses['loss']:.4f}", huber=f"{losses['loss_huber']:.4f}",
                                    sps=f"{rate:.1f}")
                    bar.update(1)
                    if main and (self.global_step % lc.every_steps == 0 or self.global_step == 1):
                        row = {"step": self.global_step, "epoch": self.epoch + self.batches_done / len(batches),
                               **losses, "sampling_p": self.sampling_p(), "samples_per_s": rate,
                               "lr": self.opt_g.param_groups[0]["lr"]}
                        tlog.write(row)
                        if tb:
                            for k, v in row.items():
                                if k not in ("step", "epoch"):
                                    tb.add_scalar(f"train/{k}", v, self.global_step)
                        window_t, window_n = time.perf_counter(), 0
                bar.close()
                if self.batches_done >= len(batches):
                    self.epoch += 1
                    self.batches_done = 0
                    if self._should_validate():
                        self._validate_and_save(vlog, tb)
                    elif main:
                        self.save("last.pt")
            if self._done() and self.batches_done:  # stopped by max_steps inside an epoch
                if self.cfg.eval.every_epochs > 0:
                    self._validate_and_save(vlog, tb)
                elif main:
                    self.save("last.pt")
        except KeyboardInterrupt:
            interrupted = True
            if main:
                path = self.save("last.pt")
                print(f"\nhop-train: interrupted at step {self.global_step}; saved {path}; "
                      f"continue with --resume {path}", flush=True)
        finally:
            for log in (tlog, vlog):
                if log:
                    log.close()
            if tb:
                tb.close()
        if main and not interrupted:
            self.export_inference()
        if main and lc.plots:
            try:
                from hop.training.plots import plot_run

                plot_run(self.out_dir)
            except Exception as err:  # a figure must never cost a finished run
                print(f"hop-train: could not draw plots ({err})")
        if interrupted:
            raise KeyboardInterrupt
        return self.metrics

    def _done(self) -> bool:
        return self.cfg.train.max_steps > 0 and self.global_step >= self.cfg.train.max_steps

    def _should_validate(self) -> bool:
        every = self.cfg.eval.every_epochs
        return every > 0 and (self.epoch % every == 0 or self.epoch >= self.cfg.train.epochs or self._done())

    def _validate_and_save(self, vlog, tb) -> None:
        if self.dist.main:
            metrics = self.validate()
            self.metrics = metrics
            if metrics:
                row = {"epoch": self.epoch + (self.batches_done / self.steps_per_epoch), "step": self.global_step,
                       **metrics}
                vlog.write(row)
                if tb:
                    for k, v in metrics.items():
                        tb.add_scalar(f"val/{k}", v, self.global_step)
                print(f"hop-train: step {self.global_step} epoch {self.epoch} " +
                      " ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
                value = metrics.get(self.best_metric, math.nan)
                if not math.isnan(value) and value < self.best:
                    self.best = value
                    self.save("best.pt")
            self.save("last.pt")
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("hop-train: TensorBoard logging is off (the 'tensorboard' package is not installed); "
                  "the CSV logs in the run directory have the same numbers")
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))


def _normal(v):
    if isinstance(v, (list, tuple)):
        return [_normal(x) for x in v]
    if isinstance(v, dict):
        return {k: _normal(x) for k, x in v.items()}
    return v


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hop-live")
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hop-train", description="Train the HOP gesture model (and its discriminator).")
    p.add_argument("--config", type=Path, help="TOML with [data] [model] [train] [eval] [log] sections")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 --set model.causal=false")
    p.add_argument("--out", type=Path, help="run directory (default: log.out_dir)")
    p.add_argument("--resume", type=Path, help="continue from a last.pt/best.pt written by hop-train")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (overrides train.device)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (overrides train.max_steps)")
    a = p.parse_args(argv)
    overrides = list(a.overrides)
    if a.device:
        overrides.append(f'train.device="{a.device}"')
    if a.max_steps is not None:
        overrides.append(f"train.max_steps={a.max_steps}")
    try:
        cfg = load_config(a.config, overrides)
    except (ValueError, OSError, tomllib.TOMLDecodeError) as err:
        print(f"hop-train: bad config: {err}", file=sys.stderr)
        return 2
    try:
        trainer = Trainer(cfg, a.out, a.resume)
        trainer.fit()
    except KeyboardInterrupt:
        return 130
    except SystemExit as err:
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return 2
        raise
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
