"""The quality report (``hop-evaluate --report DIR``): one JSON and one GIF on the held-out takes.

    hop-evaluate --report runs/report --checkpoint expressive --data data/real/heldout \\
                 --fgd-ae data/real/fgd_ae.pt

Streaming protocol on every clip of the held-out corpus (hop-make-corpus's ``heldout/``:
the last 20 % of each real paired take): the model starts from the clip's first
ground-truth pose and then runs on its own outputs, audio chunk by chunk, with no
ground truth after frame 0. Four rows, each scored against the ground truth:

    ground_truth     the real motion (its own statistics: the reference)
    model            the model on the real speech
    shuffled_audio   the same model on the same speech cut in 8-frame blocks and
                     permuted (the words stay where they were): what audio timing is worth
    mean_pose        the training corpus's mean pose, held (what doing nothing scores)

Figures: FGD (34-frame windows, stride ``stride``, features from an autoencoder trained
on real motion of the training split only), BC on whole clips (audio onsets against
motion beats of the two arms), diversity, jerk, wrist (forearm) and hand angular speed,
finger flexion range (5-95 percentile, mean over the 30 finger joints), upper-arm
rotation spread (mean angle from the clip's mean upper-arm direction), and each one's
ratio to the ground truth's. ``targets`` checks issue 15's bar: FGD and BC better than
shuffled audio, FGD at least 2x better than the mean pose, arm swing and wrist speed
within 0.5x-2x of the ground truth.

The GIF shows the first clip: ground truth | generated | shuffled audio, with the
waveform under it and a cursor at the current frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hop.model import Hop
from hop.training import metrics as M
from hop.training.dataset import Corpus
from hop.training.evaluate import generate_stream, shuffle_time

ROWS = ("ground_truth", "model", "shuffled_audio", "mean_pose")
STAT_KEYS = ("jerk", "wrist_angular_speed_deg_s", "hand_angular_speed_deg_s", "upper_arm_spread_deg",
             "finger_flexion_range_deg")


def _windows(seq: np.ndarray, window: int, stride: int) -> list[np.ndarray]:
    return [seq[s:s + window] for s in range(0, len(seq) - window + 1, stride)]


@torch.no_grad()
def stream_clips(model: Hop, corpus: Corpus, device="cpu", seed: int = 0) -> list[dict]:
    """Every clip streamed: normalised (frames, D) motion per row."""
    model.eval()
    out = []
    for i, clip in enumerate(corpus.clips):
        mel = torch.from_numpy(corpus.mel(i)).unsqueeze(0).to(device)
        tokens = torch.from_numpy(corpus.tokens(i)).unsqueeze(0).to(device)
        first = torch.from_numpy(clip.poses[0]).unsqueeze(0).to(device)
        gen = generate_stream(model, mel, tokens, first)[0].cpu().numpy()
        shuffled = generate_stream(model, shuffle_time(mel, seed=seed + i), tokens, first)[0].cpu().numpy()
        out.append({"id": clip.id, "ground_truth": clip.poses, "model": gen, "shuffled_audio": shuffled,
                    "mean_pose": np.zeros_like(clip.poses)})
    return out


def score_rows(streams: list[dict], corpus: Corpus, extractor=None, window: int = 34, stride: int = 10,
               seed: int = 0) -> dict:
    skel, fps, mean = corpus.skeleton, corpus.fps, corpus.mean
    pairs = M.beat_pairs(skel)
    audio = [c.audio for c in corpus.clips]
    frames = np.array([len(s["ground_truth"]) for s in streams], dtype=np.float64)
    real_windows = np.stack([w for s in streams for w in _windows(s["ground_truth"], window, stride)])
    real_feat = extractor.features(real_windows) if extractor is not None else None
    rows = {}
    for row in ROWS:
        seqs = [s[row] + mean for s in streams]
        per_clip = [M.motion_statistics(q, skel, fps) for q in seqs]
        r = {k: float(np.average([c[k] for c in per_clip], weights=frames)) for k in per_clip[0]}
        r["bc"] = M.bc_over_windows(audio, seqs, fps, corpus.sample_rate, pairs=pairs)
        r["mae"] = M.joint_mae(np.concatenate(seqs), np.concatenate([s["ground_truth"] + mean for s in streams]),
                               skel)
        if extractor is not None:
            gen_windows = np.stack([w for s in streams for w in _windows(s[row], window, stride)])
            feat = extractor.features(gen_windows)
            r["fgd"] = M.fgd(real_feat, feat)
            r["diversity"] = M.diversity(feat, seed=seed)
            r["windows"] = int(len(gen_windows))
        r["per_clip"] = {s["id"]: {k: round(v, 4) for k, v in c.items()} for s, c in zip(streams, per_clip)}
        rows[row] = r
    gt = rows["ground_truth"]
    for row in ROWS[1:]:
        rows[row]["ratio_to_ground_truth"] = {k: (rows[row][k] / gt[k] if gt.get(k) else float("nan"))
                                              for k in STAT_KEYS if k in gt}
    return rows


def targets(rows: dict) -> dict:
    m, sh, mp = rows["model"], rows["shuffled_audio"], rows["mean_pose"]
    t = {"bc_beats_shuffled_audio": bool(m["bc"] > sh["bc"])}
    if "fgd" in m:
        t["fgd_beats_shuffled_audio"] = bool(m["fgd"] < sh["fgd"])
        t["fgd_at_least_2x_better_than_mean_pose"] = bool(2 * m["fgd"] <= mp["fgd"])
    for k in ("upper_arm_spread_deg", "wrist_angular_speed_deg_s"):
        ratio = m["ratio_to_ground_truth"][k]
        t[f"{k}_within_0.5x_2x"] = bool(0.5 <= ratio <= 2.0)
    t["all_met"] = all(t.values())
    return t


def write_gif(path: Path, stream: dict, audio: np.ndarray, corpus: Corpus, max_seconds: float = 12.0,
              gif_fps: float | None = None) -> Path:
    """Ground truth | generated | shuffled audio, front view, with the waveform and a cursor under it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    skel, fps, mean = corpus.skeleton, corpus.fps, corpus.mean
    n = min(len(stream["ground_truth"]), int(max_seconds * fps))
    titles = ["ground truth", "generated", "shuffled audio"]
    joints = [skel.dir_vec_to_joints((stream[k][:n] + mean).astype(np.float64))
              for k in ("ground_truth", "model", "shuffled_audio")]
    fig = plt.figure(figsize=(9, 4.6), dpi=72)
    grid = fig.add_gridspec(2, 3, height_ratios=[4, 1])
    lines = []
    lo = np.min([j[..., :2].min(axis=(0, 1)) for j in joints], axis=0)
    hi = np.max([j[..., :2].max(axis=(0, 1)) for j in joints], axis=0)
    for k, title in enumerate(titles):
        ax = fig.add_subplot(grid[0, k])
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-hi[0] - 0.05, -lo[0] + 0.05)  # seen from the front: image x = -x
        ax.set_ylim(hi[1] + 0.05, lo[1] - 0.05)  # up is -y
        ax.set_aspect("equal")
        ax.axis("off")
        row = []
        for parent, child, _ in skel.bones:
            name = skel.joint_names[child]
            colour = "tab:red" if "left" in name else "tab:blue" if "right" in name else "0.3"
            (line,) = ax.plot([], [], color=colour, lw=1.2 if "_" in name and name.split("_")[1] in
                              ("thumb", "index", "middle", "ring", "little") else 2.2)
            row.append((line, parent, child))
        lines.append(row)
    wave = fig.add_subplot(grid[1, :])
    samples = audio[:int(n * corpus.sample_rate / fps)]
    t = np.arange(len(samples)) / corpus.sample_rate
    step = max(1, len(samples) // 4000)
    wave.plot(t[::step], samples[::step], color="0.4", lw=0.5)
    wave.set_xlim(0, n / fps)
    wave.set_yticks([])
    wave.set_xlabel(f"{stream['id']}: seconds (held out)", fontsize=8)
    cursor = wave.axvline(0, color="tab:red")
    fig.tight_layout()

    def draw(f):
        for row, seq in zip(lines, joints):
            for line, parent, child in row:
                line.set_data([-seq[f, parent, 0], -seq[f, child, 0]], [seq[f, parent, 1], seq[f, child, 1]])
        cursor.set_xdata([f / fps, f / fps])
        return [line for row in lines for line, _, _ in row] + [cursor]

    anim = FuncAnimation(fig, draw, frames=n, blit=False)
    path = Path(path)
    anim.save(path, writer=PillowWriter(fps=gif_fps or fps))
    plt.close(fig)
    return path


def quality_report(model: Hop, corpus: Corpus, out_dir: Path, extractor=None, window: int = 34, stride: int = 10,
                   device="cpu", seed: int = 0, gif_seconds: float = 12.0, about: dict | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not model.cfg.causal:
        raise ValueError("the report runs the streaming protocol: it needs a causal (streaming) checkpoint")
    streams = stream_clips(model, corpus, device, seed)
    rows = score_rows(streams, corpus, extractor, window, stride, seed)
    report = {
        **(about or {}),
        "protocol": "streaming: frame 0 of each held-out clip is the ground truth, no ground truth after it; "
                    "neutral style; shuffled audio = the clip's Mel frames permuted in 8-frame blocks",
        "clips": {s["id"]: len(s["ground_truth"]) for s in streams}, "fps": corpus.fps,
        "fgd_windows": {"window": window, "stride": stride},
        "rows": rows, "targets": targets(rows),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    if gif_seconds > 0:
        write_gif(out_dir / "report.gif", streams[0], corpus.clips[0].audio, corpus, gif_seconds)
    return report


def summary_lines(report: dict) -> list[str]:
    keys = ("fgd", "bc", "diversity", "upper_arm_spread_deg", "wrist_angular_speed_deg_s",
            "hand_angular_speed_deg_s", "finger_flexion_range_deg", "jerk")
    rows = report["rows"]
    lines = ["row             " + " ".join(f"{k[:14]:>14}" for k in keys)]
    for row in ROWS:
        lines.append(f"{row:15} " + " ".join(f"{rows[row].get(k, float('nan')):14.3f}" for k in keys))
    lines.append("targets: " + ", ".join(f"{k}={v}" for k, v in report["targets"].items()))
    return lines
