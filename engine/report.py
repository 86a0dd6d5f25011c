"""What a demo run leaves behind to look at: a skeleton animation and a latency plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402

from hop.bridges.retarget import convert_points  # noqa: E402
from hop.model.skeleton import get_skeleton  # noqa: E402


def write_run_report(out_dir: Path, frames: list[tuple[float, np.ndarray, bool]],
                     latencies: list[tuple[float, float]], skeleton: str,
                     gif_fps: float = 15.0, max_gif_seconds: float = 30.0) -> dict[str, str]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    if frames:
        written["animation"] = str(write_skeleton_gif(out_dir / "demo_skeleton.gif", frames, skeleton,
                                                      gif_fps, max_gif_seconds))
    if latencies:
        written["latency_plot"] = str(write_latency_plot(out_dir / "demo_latency.png", latencies))
    return written


HAND_SPAN = 0.12  # half the width of a hand panel, in the skeleton's units (wrist to fingertip ~0.15)


def _finger_names(side: str) -> set[str]:
    return {f"{side}_{finger}" for finger in ("thumb", "index", "middle", "ring", "little")}


def write_skeleton_gif(path: Path, frames, skeleton_name: str, fps: float, max_seconds: float) -> Path:
    """Front view of the skeleton (x right, up up), red while speaking, sampled at ``fps``. A rig
    with fingers gets two more panels, each hand magnified around its wrist: at full-body scale
    a hand is a few pixels."""
    skeleton = get_skeleton(skeleton_name)
    times = np.array([t for t, _, _ in frames])
    wanted = np.arange(times[0], min(times[-1], times[0] + max_seconds), 1.0 / fps)
    picks = np.searchsorted(times, wanted).clip(0, len(frames) - 1)
    joints = np.stack([skeleton.dir_vec_to_joints(frames[i][1]) for i in picks])  # (T, J, 3)
    speaking = [frames[i][2] for i in picks]
    # Seen from the front, in VRM space (Y up, the subject's left at +X): the subject's
    # left appears on the viewer's right.
    front = convert_points(joints, "ted", "vrm")
    names = skeleton.joint_names
    hands = [(side, names.index(f"{side}_wrist")) for side in ("right", "left")
             if any(n.startswith(f"{side}_index") for n in names)]
    if hands:
        fig = plt.figure(figsize=(4.8, 3.6), dpi=80)
        body_ax = fig.add_axes((0.0, 0.0, 0.66, 0.9))
        hand_axes = [fig.add_axes((0.67, 0.47 - 0.45 * k, 0.32, 0.42)) for k in range(len(hands))]
    else:
        fig, body_ax = plt.subplots(figsize=(3.2, 3.6), dpi=80)
        hand_axes = []
    panels = [(body_ax, list(skeleton.bones), None, 3)]
    for ax, (side, wrist) in zip(hand_axes, hands):
        bones = [b for b in skeleton.bones  # the forearm's end and the fingers
                 if b[1] == wrist or names[b[1]].rsplit("_", 1)[0] in _finger_names(side)]
        panels.append((ax, bones, wrist, 2))
        ax.set_title(f"{side} hand", fontsize=7, pad=1)
    xs, ys = front[..., 0], front[..., 1]
    artists = []
    for ax, bones, centre, width in panels:
        if centre is None:
            span, cx, cy = max(np.ptp(xs), np.ptp(ys)) * 0.6 + 0.1, xs.mean(), ys.mean()
            ax.set_xlim(cx - span, cx + span)
            ax.set_ylim(cy - span, cy + span)
        ax.set_aspect("equal")
        ax.axis("off")
        artists.append([ax.plot([], [], lw=width)[0] for _ in bones])
    title = body_ax.set_title("")

    def draw(k):
        colour = "tab:red" if speaking[k] else "tab:blue"
        for (ax, bones, centre, _), lines in zip(panels, artists):
            if centre is not None:  # the hand panels follow their wrist
                cx, cy = front[k, centre, 0], front[k, centre, 1]
                ax.set_xlim(cx - HAND_SPAN, cx + HAND_SPAN)
                ax.set_ylim(cy - HAND_SPAN, cy + HAND_SPAN)
            for line, (parent, child, _) in zip(lines, bones):
                line.set_data(front[k, [parent, child], 0], front[k, [parent, child], 1])
                line.set_color(colour)
        title.set_text(f"{k / fps:5.1f} s  {'speech' if speaking[k] else 'idle'}")
        return [line for lines in artists for line in lines]

    FuncAnimation(fig, draw, frames=len(picks), blit=False).save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def write_latency_plot(path: Path, latencies: list[tuple[float, float]]) -> Path:
    t = np.array([s for s, _ in latencies])
    ms = 1000.0 * np.array([v for _, v in latencies])
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    fig, (trace, hist) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100, gridspec_kw={"width_ratios": [3, 1]})
    trace.plot(t - t[0], ms, ".", ms=2)
    for value, name in ((p50, "p50"), (p95, "p95"), (p99, "p99")):
        trace.axhline(value, ls="--", lw=0.8, color="grey")
        trace.text(0, value, f" {name} {value:.1f} ms", va="bottom", fontsize=8)
    trace.set_xlabel("session time (s)")
    trace.set_ylabel("capture -> send latency (ms)")
    trace.set_title(f"hop-live latency per pose frame ({len(ms)} frames)")
    hist.hist(ms, bins=40, orientation="horizontal")
    hist.set_xlabel("frames")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
