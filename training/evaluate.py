"""Evaluate a checkpoint: FGD, BC, Diversity and joint MAE, two protocols.

* ``standard``: the published protocol. Every 34-frame window (stride 10) of the
  held-out corpus is generated from a fresh model state with the first 4 frames
  given as ground-truth seeds; a causal model then runs on its own outputs.
* ``streaming`` (causal models only): each clip is streamed from its first frame
  with one ground-truth pose as the start and no ground truth after it; the
  output is then cut into the same 34-frame windows and scored.

    hop-evaluate --checkpoint runs/x/best.pt --data CORPUS --fgd-ae fgd_ae.pt \\
                 [--split test] [--protocol standard|streaming|both] [--shuffled-audio]
                 [--json out.json] [--gif out.gif]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from hop.model import BUILTIN_CHECKPOINTS, Hop, load_checkpoint, resolve_checkpoint
from hop.profiles import LM_WEIGHTS
from hop.training import metrics as M
from hop.training.dataset import Corpus, WindowDataset


def seed_history(poses: torch.Tensor, before: torch.Tensor, has_before: torch.Tensor, n_seed: int):
    """Pose history the standard protocol gives: the first ``n_seed`` poses of the window and nothing else.

    prev_pose[t] = pose t-1 for 1 <= t <= n_seed; frame 0 has no known history (the
    frame before the window is NOT given, so exactly ``n_seed`` ground-truth poses are
    seen). ``before``/``has_before`` are accepted for symmetry with teacher_history.
    Returns prev_pose (B, T, D) and prev_known (B, T).
    """
    b, t, d = poses.shape
    prev = torch.zeros_like(poses)
    known = torch.zeros(b, t, device=poses.device)
    s = min(n_seed, t - 1)
    if s > 0:
        prev[:, 1:s + 1] = poses[:, :s]
        known[:, 1:s + 1] = 1.0
    return prev, known


def teacher_history(poses: torch.Tensor, before: torch.Tensor, has_before: torch.Tensor):
    """Full ground-truth history (teacher forcing): prev_pose[t] = pose t-1."""
    prev = torch.cat([before.unsqueeze(1), poses[:, :-1]], dim=1)
    known = torch.ones(poses.shape[:2], device=poses.device)
    known[:, 0] = has_before
    return prev, known


def neutral_style(model: Hop, batch: int, device) -> torch.Tensor:
    """The style prior's mean: what a stream uses when no speaker is chosen."""
    return torch.zeros(batch, model.cfg.style_dim, device=device)


@torch.no_grad()
def generate_windows(model: Hop, batch: dict, n_seed: int = 4, style: torch.Tensor | None = None) -> torch.Tensor:
    """Standard protocol on a batch of windows -> (B, T, D) normalised poses; seed frames are the ground truth."""
    device = batch["mel"].device
    poses, mel, tokens = batch["poses"], batch["mel"], batch["tokens"]
    b = poses.shape[0]
    style = neutral_style(model, b, device) if style is None else style
    prev, known = seed_history(poses, batch["before"], batch["has_before"], n_seed)
    if not model.cfg.causal:
        out = model.forward_offline(mel, tokens, style, prev, known)
    else:
        s = max(1, min(n_seed, poses.shape[1] - 1))
        state = model.initial_state(b, device)
        head, state = model.step(mel[:, :s], tokens[:, :s], style, state, prev[:, :s], known[:, :s])
        state = model.with_prev_pose(state, poses[:, s - 1])
        tail, _ = model.step(mel[:, s:], tokens[:, s:], style, state)
        out = torch.cat([head, tail], dim=1)
    out = out.float().clone()
    if n_seed > 0:
        out[:, :n_seed] = poses[:, :n_seed]
    return out


@torch.no_grad()
def generate_stream(model: Hop, mel: torch.Tensor, tokens: torch.Tensor, first_pose: torch.Tensor | None,
                    chunk: int = 64) -> torch.Tensor:
    """Stream a whole clip (B=1 or equal lengths) from its start -> (B, N, D); frame 0 is ``first_pose`` if given."""
    if not model.cfg.causal:
        raise ValueError("streaming evaluation needs a causal model (this checkpoint is offline/paper mode)")
    b, n, _ = mel.shape
    device = mel.device
    style = neutral_style(model, b, device)
    state = model.initial_state(b, device)
    outputs, begin = [], 0
    if first_pose is not None:
        state = model.with_prev_pose(state, first_pose)
        # frame 0 is given: advance the model's audio/LM context over it with the pose known
        _, state = model.step(mel[:, :1], tokens[:, :1], style, state, first_pose.unsqueeze(1) * 0,
                              torch.zeros(b, 1, device=device))
        state = model.with_prev_pose(state, first_pose)
        outputs.append(first_pose.unsqueeze(1))
        begin = 1
    for k in range(begin, n, chunk):
        out, state = model.step(mel[:, k:k + chunk], tokens[:, k:k + chunk], style, state)
        outputs.append(out.float())
    return torch.cat(outputs, dim=1)


def shuffle_time(x: torch.Tensor, seed: int = 0, block: int = 8) -> torch.Tensor:
    """Permute blocks of ``block`` frames in time (one permutation for every batch row).

    Destroys the timing between audio and motion while keeping the audio's local
    character (syllables, pauses); ``block=1`` shuffles single frames, which feeds the
    model a stream of unnatural jumps instead.
    """
    t = x.shape[1]
    n_blocks = -(-t // block)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_blocks, generator=g)
    if n_blocks > 1:
        while bool((order == torch.arange(n_blocks)).any()):  # every block moves
            order = torch.randperm(n_blocks, generator=g)
    frames = torch.cat([torch.arange(b * block, min((b + 1) * block, t)) for b in order.tolist()])
    return x[:, frames.to(x.device)]


def score(generated: np.ndarray, real: np.ndarray, audio: list, corpus: Corpus, extractor=None,
          seed: int = 0) -> dict:
    """Metrics of (N, T, D) normalised windows against the real windows and their audio."""
    mean = corpus.mean
    gen_abs, real_abs = generated + mean, real + mean
    pairs = M.beat_pairs(corpus.skeleton)
    result = {
        "windows": int(len(generated)),
        "mae": M.joint_mae(gen_abs, real_abs, corpus.skeleton),
        "bc": M.bc_over_windows(audio, gen_abs, corpus.fps, corpus.sample_rate, pairs=pairs),
        "bc_real": M.bc_over_windows(audio, real_abs, corpus.fps, corpus.sample_rate, pairs=pairs),
    }
    if extractor is not None and len(generated) >= 2:
        fg, fr = extractor.features(generated), extractor.features(real)
        result["fgd"] = M.fgd(fr, fg)
        result["diversity"] = M.diversity(fg, seed=seed)
        result["diversity_real"] = M.diversity(fr, seed=seed)
    return result


def _subset(n: int, max_windows: int) -> list[int]:
    if max_windows <= 0 or n <= max_windows:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max_windows).round().astype(int).tolist()))


def _collate(ds: WindowDataset, idx: list[int], device) -> dict:
    items = [ds[k] for k in idx]
    return {key: torch.stack([it[key] for it in items]).to(device) for key in items[0]}


@torch.no_grad()
def evaluate_standard(model: Hop, ds: WindowDataset, extractor=None, n_seed: int = 4, batch_size: int = 64,
                      max_windows: int = 0, device="cpu", audio_transform=None, seed: int = 0,
                      return_motion: bool = False) -> dict:
    """``audio_transform``: optional fn(mel) -> mel applied to the model's input only (e.g. shuffle_time)."""
    was_training = model.training
    model.eval()
    idx = _subset(len(ds), max_windows)
    gens, reals = [], []
    for k in range(0, len(idx), batch_size):
        batch = _collate(ds, idx[k:k + batch_size], device)
        if audio_transform is not None:
            batch["mel"] = audio_transform(batch["mel"])
        gens.append(generate_windows(model, batch, n_seed).cpu().numpy())
        reals.append(batch["poses"].cpu().numpy())
    model.train(was_training)
    gen, real = np.concatenate(gens), np.concatenate(reals)
    result = score(gen, real, [ds.audio(k) for k in idx], ds.corpus, extractor, seed)
    if return_motion:
        result["_motion"] = (gen, real, idx)
    return result


@torch.no_grad()
def evaluate_streaming(model: Hop, corpus: Corpus, extractor=None, window: int = 34, stride: int = 10,
                       max_clips: int = 0, device="cpu", audio_transform=None, seed: int = 0,
                       return_motion: bool = False) -> dict:
    was_training = model.training
    model.eval()
    gens, reals, audio = [], [], []
    clip_ids = _subset(len(corpus), max_clips)
    streamed = []
    for i in clip_ids:
        clip = corpus.clips[i]
        if len(clip.poses) < window:
            continue
        mel = torch.from_numpy(corpus.mel(i)).unsqueeze(0).to(device)
        if audio_transform is not None:
            mel = audio_transform(mel)
        tokens = torch.from_numpy(corpus.tokens(i)).unsqueeze(0).to(device)
        first = torch.from_numpy(clip.poses[0]).unsqueeze(0).to(device)
        out = generate_stream(model, mel, tokens, first)[0].cpu().numpy()
        streamed.append((i, out))
        for s in range(0, len(out) - window + 1, stride):
            gens.append(out[s:s + window])
            reals.append(clip.poses[s:s + window])
            audio.append(corpus.audio_span(i, s, window))
    model.train(was_training)
    if not gens:
        raise ValueError(f"no clip of {corpus.root} has {window} frames")
    result = score(np.stack(gens), np.stack(reals), audio, corpus, extractor, seed)
    result["clips"] = len(streamed)
    # how much it moves, against the ground truth of the same clips (1.0: as much)
    gen_stats = [M.motion_statistics(out + corpus.mean, corpus.skeleton, corpus.fps) for _, out in streamed]
    real_stats = [M.motion_statistics(corpus.clips[i].poses + corpus.mean, corpus.skeleton, corpus.fps)
                  for i, _ in streamed]
    for key, name in (("wrist_angular_speed_deg_s", "wrist_speed_ratio"), ("upper_arm_spread_deg", "arm_spread_ratio")):
        real = float(np.mean([r[key] for r in real_stats]))
        result[name] = float(np.mean([g[key] for g in gen_stats])) / real if real > 0 else float("nan")
    if return_motion:
        result["_motion"] = streamed
    return result


def _fmt(metrics: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) and not math.isnan(v) else f"{k}={v}"
                    for k, v in metrics.items() if not k.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    from hop.model import CheckpointError, load_tokenizer
    from hop.model.text import WordPieces

    p = argparse.ArgumentParser(prog="hop-evaluate", description="Score a hop-train checkpoint on a corpus.")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file or a built-in name: " + ", ".join(BUILTIN_CHECKPOINTS))
    p.add_argument("--data", type=Path, help="held-out hop-clips corpus (hop-make-corpus OUT: OUT or OUT/heldout)")
    p.add_argument("--split", default="", help="only clips whose manifest records this split (e.g. test)")
    p.add_argument("--fgd-ae", type=Path, help="autoencoder from hop-train-fgd-ae (FGD and Diversity need it)")
    p.add_argument("--protocol", choices=["standard", "streaming", "both"], default="both")
    p.add_argument("--seed-frames", type=int, default=4)
    p.add_argument("--window", type=int, default=34)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--max-windows", type=int, default=0, help="0: every window")
    p.add_argument("--max-clips", type=int, default=0, help="streaming protocol: 0 = every clip")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--lm", help="local folder of the checkpoint's LM if its original path is not on this machine")
    p.add_argument("--lm-weights", choices=LM_WEIGHTS, default="fp32",
                   help="the frozen LM's weight format, as hop-live --lm-weights runs it (int8: CPU only)")
    p.add_argument("--shuffled-audio", action="store_true", help="also score the model fed time-shuffled audio")
    p.add_argument("--json", type=Path, help="write the metrics here")
    p.add_argument("--gif", type=Path, help="side-by-side animation of generated vs real motion")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="the quality report instead (training/report.py): streaming protocol on every held-out "
                        "clip, model vs shuffled audio vs mean pose vs ground truth; writes DIR/report.json "
                        "and DIR/report.gif")
    p.add_argument("--gif-seconds", type=float, default=12.0, help="--report: GIF length (0: no GIF)")
    a = p.parse_args(argv)
    if a.data is None:
        p.error("--data is required (the held-out corpus)")
    if a.report and (a.data / "heldout" / "manifest.json").is_file():
        a.data = a.data / "heldout"
    a.checkpoint = resolve_checkpoint(a.checkpoint)
    from hop.training.motion_ae import load_motion_ae

    if a.threads > 0:
        torch.set_num_threads(a.threads)

    try:
        model, payload = load_checkpoint(a.checkpoint, lm_spec=a.lm)
    except CheckpointError as err:
        print(f"hop-evaluate: {err}", file=sys.stderr)
        return 2
    model = model.to(a.device)
    if a.lm_weights != "fp32":  # score the model as a deployment with this LM format runs it
        from hop.engine.backends import BackendError, set_lm_weights

        try:
            set_lm_weights(model, a.lm_weights)
        except BackendError as err:
            print(f"hop-evaluate: --lm-weights {a.lm_weights}: {err}", file=sys.stderr)
            return 2
    pieces = WordPieces(load_tokenizer(model.cfg.lm)) if model.lm is not None else None
    corpus = Corpus(a.data, mel=model.cfg.mel, pieces=pieces, split=a.split)
    if len(corpus) == 0:
        print(f"hop-evaluate: no clips in {a.data}" + (f" with split {a.split!r}" if a.split else ""), file=sys.stderr)
        return 2
    if corpus.skeleton.name != model.cfg.skeleton:
        print(f"hop-evaluate: corpus {a.data} uses skeleton {corpus.skeleton.name!r}, the checkpoint was "
              f"trained for {model.cfg.skeleton!r}", file=sys.stderr)
        return 2
    if corpus.fps != model.cfg.fps:
        print(f"hop-evaluate: corpus is {corpus.fps} fps, the checkpoint {model.cfg.fps} fps", file=sys.stderr)
        return 2
    extractor = load_motion_ae(a.fgd_ae, corpus.skeleton.name) if a.fgd_ae else None
    if a.report:
        from hop.training.report import quality_report, summary_lines

        if not model.cfg.causal:
            print("hop-evaluate: --report streams the held-out clips: it needs a causal checkpoint", file=sys.stderr)
            return 2
        report = quality_report(model, corpus, a.report, extractor, a.window, a.stride, a.device,
                                gif_seconds=a.gif_seconds,
                                about={"checkpoint": str(a.checkpoint), "data": str(a.data),
                                       "fgd_ae": str(a.fgd_ae) if a.fgd_ae else None, "lm_weights": a.lm_weights,
                                       "trained_on": (payload.get("train_args") or {}).get("data", {}).get("train")})
        print("\n".join(summary_lines(report)))
        print(f"wrote {a.report / 'report.json'}" + (f" and {a.report / 'report.gif'}" if a.gif_seconds > 0 else ""))
        return 0
    results = {}
    protocols = ["standard", "streaming"] if a.protocol == "both" else [a.protocol]
    if not model.cfg.causal and "streaming" in protocols:
        print("offline (paper-mode) checkpoint: skipping the streaming protocol")
        protocols.remove("streaming")
    motion = None
    for proto in protocols:
        variants = [("", None)] + ([("_shuffled_audio", shuffle_time)] if a.shuffled_audio else [])
        for suffix, transform in variants:
            if proto == "standard":
                ds = WindowDataset(corpus, a.window, a.stride)
                r = evaluate_standard(model, ds, extractor, a.seed_frames, a.batch_size, a.max_windows, a.device,
                                      transform, return_motion=not suffix)
            else:
                r = evaluate_streaming(model, corpus, extractor, a.window, a.stride, a.max_clips, a.device,
                                       transform, return_motion=not suffix)
            if not suffix and (motion is None or proto == "streaming"):  # prefer a whole streamed clip
                motion = (proto, r.get("_motion"))
            results[proto + suffix] = {k: v for k, v in r.items() if not k.startswith("_")}
            print(f"{proto + suffix}: {_fmt(r)}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"checkpoint": str(a.checkpoint), "data": str(a.data), **results}, indent=1))
    if a.gif and motion is not None and motion[1] is not None:
        from hop.training.plots import skeleton_gif

        proto, m = motion
        if proto == "standard":
            gen, real, _ = m
            g, r = gen[0], real[0]
        else:
            i, out = m[0]
            g, r = out, corpus.clips[i].poses
        skeleton_gif(a.gif, [r + corpus.mean, g + corpus.mean], ["real", f"generated ({proto})"],
                     corpus.skeleton, corpus.fps)
        print(f"wrote {a.gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
