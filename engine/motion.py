"""What the avatar does between the model and the wire: idle life, gating, smoothing, rate.

The model speaks in unit bone directions. ``MotionShaper`` turns its raw output
into what a viewer should see:

* **idle motion** while nobody speaks (breathing and a slow sway around the rest
  pose), so the avatar is never frozen and never twitches on room noise;
* a **crossfade** from idle to the model at speech onset and back after it, driven
  by the voice activity detector;
* **intensity**: the model's deviation from the rest pose is scaled (0 = rest,
  1 = as generated, >1 = exaggerated);
* **smoothing** with a One Euro filter (Casiez et al. 2012): heavy when the pose
  moves slowly (hides jitter), light when it moves fast (keeps strokes crisp and
  adds little lag).

``SendClock`` spreads model frames over a higher send rate by short, damped
extrapolation, so the newest pose goes out the moment it exists.
All vector work is per bone on a few dozen numbers: numpy is fast enough.
"""

from __future__ import annotations

import math

import numpy as np

from hop.profiles import INTENSITY_RANGE, MotionOptions


def normalize_bones(dir_vec: np.ndarray) -> np.ndarray:
    """(..., n_bones*3) -> the same with every bone vector of unit length."""
    v = dir_vec.reshape(*dir_vec.shape[:-1], -1, 3)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(norm, 1e-8)).reshape(dir_vec.shape).astype(np.float32)


class IdleMotion:
    """Breathing and sway around a rest pose, as a function of time (deterministic per seed)."""

    def __init__(self, rest: np.ndarray, options: MotionOptions):
        self.rest = normalize_bones(np.asarray(rest, dtype=np.float32))
        self.options = options
        rng = np.random.default_rng(options.seed)
        n_bones = len(self.rest) // 3
        # Each bone gets its own perpendicular wobble direction and phase, so the
        # figure breathes as a whole but not in lockstep.
        bones = self.rest.reshape(n_bones, 3)
        raw = rng.standard_normal((n_bones, 3))
        perp = raw - (raw * bones).sum(-1, keepdims=True) * bones
        self._axes = perp / np.maximum(np.linalg.norm(perp, axis=-1, keepdims=True), 1e-8)
        self._phases = rng.uniform(0, 0.6, n_bones)  # breathing: small phase spread
        self._sway_freqs = rng.uniform(0.05, 0.15, (n_bones, 2))
        self._sway_phases = rng.uniform(0, 2 * math.pi, (n_bones, 2))

    def at(self, t: float) -> np.ndarray:
        o = self.options
        n_bones = len(self._axes)
        breathe = o.breathing_amount * np.sin(2 * math.pi * o.breathing_hz * t + self._phases)
        sway = o.sway_amount * np.sin(2 * math.pi * self._sway_freqs * t + self._sway_phases).mean(-1)
        offset = (breathe + sway)[:, None] * self._axes
        return normalize_bones((self.rest.reshape(n_bones, 3) + offset).reshape(-1))


class OneEuroFilter:
    """Per-component One Euro filter on a fixed-rate signal."""

    def __init__(self, rate_hz: float, min_cutoff_hz: float, beta: float, d_cutoff_hz: float = 1.0):
        self.rate = rate_hz
        self.min_cutoff = min_cutoff_hz
        self.beta = beta
        self.d_cutoff = d_cutoff_hz
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self.rate)

    def reset(self) -> None:
        self._x = self._dx = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.min_cutoff <= 0:
            return x
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self._x) * self.rate
        self._dx = self._dx + self._alpha(self.d_cutoff) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        alpha = self._alpha(cutoff)
        self._x = self._x + alpha * (x - self._x)
        return self._x.copy()


class MotionShaper:
    """Raw model pose + voice activity in, the pose to send out; one per stream."""

    def __init__(self, rest: np.ndarray, options: MotionOptions = MotionOptions()):
        self.options = options
        self.rest = normalize_bones(np.asarray(rest, dtype=np.float32))
        self.idle = IdleMotion(self.rest, options)
        self.smoother = OneEuroFilter(options.pose_fps, options.smoothing_min_cutoff_hz, options.smoothing_beta)
        self.speech_weight = 0.0  # 0 = idle, 1 = model
        self.intensity = options.intensity
        self.muted = False

    def set_intensity(self, value: float) -> None:
        low, high = INTENSITY_RANGE
        if not low <= value <= high:
            raise ValueError(f"intensity must be within {low:g}..{high:g}, got {value}")
        self.intensity = float(value)

    def _advance_weight(self, speaking: bool) -> None:
        o = self.options
        target = 1.0 if (speaking or not o.gate_by_voice) and not self.muted else 0.0
        span = o.onset_s if target > self.speech_weight else o.release_s
        step = 1.0 if span <= 0 else 1.0 / (span * o.pose_fps)
        if target > self.speech_weight:
            self.speech_weight = min(target, self.speech_weight + step)
        else:
            self.speech_weight = max(target, self.speech_weight - step)

    def __call__(self, model_pose: np.ndarray | None, speaking: bool, t: float) -> np.ndarray:
        """One pose frame. ``model_pose`` None means no model output this frame (no audio: idle only)."""
        self._advance_weight(speaking and model_pose is not None)
        idle = self.idle.at(t)
        if model_pose is None or self.speech_weight == 0.0:
            pose = idle
        else:
            gen = normalize_bones(np.asarray(model_pose, dtype=np.float32))
            scaled = normalize_bones(self.rest + self.intensity * (gen - self.rest))
            # Smoothstep the weight: no velocity jump at the ends of the crossfade.
            w = self.speech_weight * self.speech_weight * (3 - 2 * self.speech_weight)
            pose = normalize_bones((1 - w) * idle + w * scaled)
        return normalize_bones(self.smoother(pose))


def sends_per_frame(pose_fps: float, send_rate: float) -> int:
    """Whole sends per model frame; the rate on the wire is pose_fps times this."""
    return max(1, round(send_rate / pose_fps))


class SendClock:
    """Spreads model frames at ``pose_fps`` over ``send_rate`` sends.

    The newest model frame goes out at once; the sends in between continue its
    motion by damped linear extrapolation from the last two frames (never
    interpolation, which would hold every pose back by a model frame).
    """

    def __init__(self, pose_fps: float, send_rate: float, damping: float = 0.5):
        if send_rate < pose_fps:
            raise ValueError(f"send rate {send_rate} Hz is below the pose rate {pose_fps} fps; "
                             "use a send rate at least the model's pose rate")
        self.pose_fps = pose_fps
        self.per_frame = sends_per_frame(pose_fps, send_rate)
        self.damping = damping
        self._previous: np.ndarray | None = None

    @property
    def interval_s(self) -> float:
        return 1.0 / (self.pose_fps * self.per_frame)

    def expand(self, pose: np.ndarray) -> list[np.ndarray]:
        """The sends for one model frame: the frame itself, then the in-between extrapolations."""
        previous, self._previous = self._previous, pose
        sends = [pose]
        if previous is None:
            return sends + [pose] * (self.per_frame - 1)
        velocity = pose - previous
        for k in range(1, self.per_frame):
            sends.append(normalize_bones(pose + self.damping * (k / self.per_frame) * velocity))
        return sends
