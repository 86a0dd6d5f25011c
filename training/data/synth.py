"""A synthetic corpus whose gestures follow its speech by a known rule (hop-clips format).

Used for tests and smoke training: it is small, deterministic from a seed, needs no
downloads, and the audio -> motion relation is exact, so a learning test can ask
whether a model picked it up (beat consistency on held-out clips against the same
model fed time-shuffled audio).

Speech
    Real synthesised speech from libespeak-ng (Debian's ``espeak-ng``), driven
    through ctypes in a fresh worker process per clip (``_espeak_worker.py``;
    the library keeps state between utterances) so that its WORD events give
    word start times (the ``sample`` field of each event, at espeak's 22,050 Hz). A clip is a leading
    silence, then phrases of 3-9 words from a built-in grammar separated by
    pauses of 0.35-1.2 s, until the clip reaches ``clip_seconds``. The audio is
    resampled to 16 kHz (polyphase, 320/441).

    Word times: start = the WORD event's sample, moved forward to the first 10 ms
    frame whose RMS level is within 35 dB of the clip's loudest frame when the
    event precedes the sound (espeak reports a phrase's first word at sample 0,
    before its leading silence). End = the next word's event (or the phrase end),
    pulled back to just after the last such loud frame, at least 50 ms after the
    start. So a word before a pause ends where its sound ends.

Motion (TED Gesture, 10 joints, 9 unit bone directions; up is -y, +z forward,
the subject's left is -x)
    1. Audio onsets: spectral flux of 40-band log-mel spectra (32 ms window,
       10 ms hop): mean over bands of the positive frame-to-frame increase.
       A frame is an onset when it is the maximum within +-50 ms, exceeds the
       clip's mean + 0.5 std of the flux, and is loud (within 30 dB of the
       clip's loudest frame). Onsets closer than the style's ``min_gap`` keep
       the stronger one. ``audio_onsets`` implements this.
    2. Loudness of an onset: the highest 10 ms RMS level (dB) in the 120 ms after
       it; ``a = clip(1 + (dB - ref) / 24, 0.2, 1)`` with ref the 98th percentile
       of the clip's frame levels.
    3. Strokes: every onset is a stroke whose APEX (largest arm excursion, zero
       velocity) is at the onset time plus the style's ``lag`` (0 for every
       built-in style), amplitude ``style.amplitude * a``. Which arm strokes is
       a style property (right only, left only, both, or alternating).
    4. Between strokes of the same arm less than ``pause_gap`` (0.7 s) apart the
       arm retracts half-way, to ``retract`` (0.3) times the smaller amplitude,
       at the midpoint; across longer gaps (pauses) it returns to rest 0.3 s
       after a stroke and leaves rest 0.3 s before the next. Between these knots
       the activation follows smoothstep curves (zero velocity at each knot), so
       motion beats (velocity minima) fall on the knots, apexes included.
    5. Pose from activations: the rest pose is the style's (``rest_pose``: TED's
       published mean pose with each upper arm abducted by ``rest_abduct`` and
       each forearm lowered by ``rest_lower`` and turned inward by
       ``rest_inward`` degrees; far enough from the mean pose that the published
       "mean pose" window filter keeps the windows). An arm with activation s raises its
       upper arm forward by 25*s degrees, abducts it by ``abduction``*20*s degrees
       and raises its forearm by a further 45*s degrees. The head nods forward
       by ``nod``*12 degrees times the activation of all strokes together.
       Always on: breathing (a 1.5 degree upper-body sway and a shoulder lift at
       0.25 Hz) and a slow random drift of each arm (about 2 degrees), so pauses
       are never frozen.

Speaker styles (``STYLES``) differ measurably: which wrist moves (per-arm motion
energy), how far (amplitude, abduction), rest posture, head nods, and voice (espeak variant,
rate, pitch). Only espeak voices whose output does not depend on what was spoken
before are used (the plain ``en-us`` voice and several variants carry a pitch
"flutter" state from one utterance to the next, which would break determinism);
the test suite checks bit-identical regeneration. The style of a clip is its speaker: ``manifest.speakers`` lists
the style names and ``ClipEntry.speaker`` indexes that list.

Each clip's ``source`` in the manifest records the generator, seed, style, voice,
text, the split (every 5th clip "test", the one after it "val", else "train"),
and the stroke apex times and amplitudes (seconds from the clip's frame 0).

Command line::

    hop-make-synth OUT_DIR [--clips 40] [--seed 0] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from hop.model.frontend import MelOptions, mel_filterbank
from hop.model.skeleton import TED_GESTURE

from .clips import POSE_FPS, SAMPLE_RATE, ClipWriter, Manifest, make_clip

# ---------------------------------------------------------------------------
# espeak-ng, in a fresh worker process per request (see _espeak_worker.py)

_WORKER = Path(__file__).with_name("_espeak_worker.py")


class EspeakUnavailable(RuntimeError):
    pass


def speak_phrases(texts: list[str], voice: str = "en-us+f3", rate: int = 170, pitch: int = 50):
    """Synthesise phrases (plain words and spaces) in one fresh espeak-ng process.

    Returns, per phrase, (audio float32 at 16 kHz, [(word, start_s), ...]) with word
    starts from espeak-ng's WORD events rescaled to 16 kHz time.
    """
    request = json.dumps({"voice": voice, "rate": int(rate), "pitch": int(pitch), "texts": list(texts)})
    try:
        proc = subprocess.run([sys.executable, "-I", str(_WORKER)], input=request.encode(), capture_output=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EspeakUnavailable(f"espeak worker failed: {exc}") from exc
    header, _, pcm = proc.stdout.partition(b"\n")
    try:
        reply = json.loads(header)
    except ValueError:
        raise EspeakUnavailable(f"espeak worker failed: {proc.stderr.decode(errors='replace')[-500:]}") from None
    if "error" in reply:
        raise EspeakUnavailable(reply["error"])
    src_rate = reply["sample_rate"]
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    out, pos = [], 0
    for text, phrase in zip(texts, reply["phrases"]):
        raw = samples[pos:pos + phrase["n_samples"]]
        pos += phrase["n_samples"]
        audio16 = resample_poly(raw, SAMPLE_RATE, src_rate).astype(np.float32)
        words = []
        for char_pos, length, sample in phrase["words"]:
            word = text[char_pos - 1:char_pos - 1 + length].strip()
            if word:
                words.append((word, sample / src_rate))
        out.append((audio16, words))
    return out


def speak(text: str, voice: str = "en-us+f3", rate: int = 170, pitch: int = 50):
    """One phrase -> (audio float32 at 16 kHz, [(word, start_s), ...])."""
    return speak_phrases([text], voice, rate, pitch)[0]


# ---------------------------------------------------------------------------
# text

_DET = "the a this that every our your one".split()
_ADJ = ("bright quiet simple careful strange open heavy gentle rapid golden hidden modern "
        "ancient curious honest distant narrow steady little enormous").split()
_NOUN = ("river market window teacher machine garden question answer mountain signal "
         "village engine picture journey letter morning system planet story voice "
         "harbour kitchen circle pattern bridge").split()
_VERB = ("carries follows changes builds opens finds holds moves shows turns "
         "remembers explains protects reaches gathers").split()
_ADV = "slowly always really never clearly often quickly simply".split()
_PREP = "across under beyond near through behind inside toward".split()


def _phrase(rng: np.random.Generator) -> str:
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    forms = [
        lambda: [pick(_DET), pick(_NOUN), pick(_VERB), pick(_DET), pick(_NOUN)],
        lambda: [pick(_DET), pick(_ADJ), pick(_NOUN), pick(_ADV), pick(_VERB)],
        lambda: [pick(_DET), pick(_NOUN), pick(_VERB), pick(_PREP), pick(_DET), pick(_ADJ), pick(_NOUN)],
        lambda: [pick(_ADV), pick(_DET), pick(_ADJ), pick(_NOUN), pick(_VERB), pick(_DET), pick(_NOUN)],
        lambda: [pick(_DET), pick(_ADJ), pick(_NOUN)],
        lambda: [pick(_DET), pick(_NOUN), pick(_PREP), pick(_DET), pick(_NOUN), pick(_VERB),
                 pick(_ADV), pick(_PREP), "the", pick(_NOUN)],
    ]
    return " ".join(forms[rng.integers(len(forms))]())


# ---------------------------------------------------------------------------
# audio analysis

_HOP_S = 0.010


def _frame_levels(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """RMS level in dB of consecutive 10 ms frames."""
    hop = int(round(_HOP_S * sr))
    n = len(audio) // hop
    frames = audio[:n * hop].reshape(n, hop).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)


def onset_strength(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Spectral flux of 40-band log-mel spectra at a 10 ms hop; value j belongs to time j * 10 ms."""
    opts = MelOptions(sample_rate=sr, n_fft=512, n_mels=40, f_min=40.0, f_max=min(7600.0, sr / 2))
    hop = int(round(_HOP_S * sr))
    padded = np.concatenate([np.zeros(opts.n_fft // 2), np.asarray(audio, np.float64), np.zeros(opts.n_fft)])
    n = len(audio) // hop
    idx = np.arange(n)[:, None] * hop + np.arange(opts.n_fft)[None, :]
    spec = np.abs(np.fft.rfft(padded[idx] * np.hanning(opts.n_fft), axis=-1)) ** 2
    logmel = np.log(spec @ mel_filterbank(opts) + 1e-8)
    flux = np.zeros(n)
    flux[1:] = np.maximum(0.0, np.diff(logmel, axis=0)).mean(axis=1)
    return flux


def audio_onsets(audio: np.ndarray, sr: int = SAMPLE_RATE, min_gap: float = 0.25) -> np.ndarray:
    """Onset times in seconds by the rule in the module docstring (step 1)."""
    flux = onset_strength(audio, sr)
    levels = _frame_levels(audio, sr)[:len(flux)]
    if flux.size < 3:
        return np.zeros(0)
    threshold = flux.mean() + 0.5 * flux.std()
    loud = levels > levels.max() - 30.0
    half = 5  # +-50 ms
    padded = np.pad(flux, half, mode="constant")
    local_max = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1).max(axis=1)
    candidates = np.flatnonzero((flux >= local_max) & (flux > threshold) & loud)
    accepted: list[int] = []
    gap = int(round(min_gap / _HOP_S))
    for j in candidates[np.argsort(-flux[candidates], kind="stable")]:
        if all(abs(j - k) >= gap for k in accepted):
            accepted.append(int(j))
    return np.sort(np.array(accepted, dtype=np.float64)) * _HOP_S


def onset_loudness(audio: np.ndarray, onsets: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Step 2 of the rule: 0.2..1 from the loudest 10 ms level in the 120 ms after each onset."""
    levels = _frame_levels(audio, sr)
    if levels.size == 0:
        return np.zeros(len(onsets))
    ref = np.percentile(levels, 98)
    out = []
    for t in onsets:
        j = int(round(t / _HOP_S))
        db = levels[j:j + 12].max() if j < len(levels) else levels[-1]
        out.append(np.clip(1.0 + (db - ref) / 24.0, 0.2, 1.0))
    return np.array(out)


# ---------------------------------------------------------------------------
# motion


@dataclass(frozen=True)
class SynthStyle:
    name: str
    arms: str  # "right", "left", "both" or "alternate"
    amplitude: float
    abduction: float
    nod: float
    voice: str
    rate: int
    pitch: int
    rest_lower: float = 20.0  # rest posture, degrees (see rest_pose)
    rest_abduct: float = 0.0
    rest_inward: float = 0.0
    min_gap: float = 0.25
    lag: float = 0.0  # stroke apex minus onset, seconds


STYLES: tuple[SynthStyle, ...] = (
    SynthStyle("s0_right_beats", "right", 1.0, 0.3, 0.5, "en-us+m2", 165, 40,
               rest_lower=55.0, rest_abduct=-5.0),
    SynthStyle("s1_left_beats", "left", 0.8, 0.3, 0.5, "en-us+f3", 175, 60,
               rest_lower=40.0, rest_inward=30.0),
    SynthStyle("s2_both_wide", "both", 1.0, 1.0, 0.3, "en-us+Andy", 150, 45,
               rest_lower=30.0, rest_abduct=18.0),
    SynthStyle("s3_alternate_small", "alternate", 0.6, 0.2, 1.2, "en-us+f4", 185, 65,
               rest_lower=50.0, rest_abduct=-8.0, rest_inward=15.0, min_gap=0.3),
)

PAUSE_GAP = 0.7
RETRACT = 0.3
REST_MARGIN = 0.3


def _smoothstep_track(knots_t: list[float], knots_v: list[float], times: np.ndarray) -> np.ndarray:
    """Piecewise smoothstep through (t, v) knots; constant outside; zero velocity at knots."""
    kt = np.asarray(knots_t, dtype=np.float64)
    kv = np.asarray(knots_v, dtype=np.float64)
    if kt.size == 0:
        return np.zeros_like(times)
    order = np.argsort(kt, kind="stable")
    kt, kv = kt[order], kv[order]
    out = np.empty_like(times)
    i = np.clip(np.searchsorted(kt, times, side="right") - 1, 0, len(kt) - 1)
    nxt = np.minimum(i + 1, len(kt) - 1)
    span = np.maximum(kt[nxt] - kt[i], 1e-9)
    u = np.clip((times - kt[i]) / span, 0.0, 1.0)
    u = u * u * (3.0 - 2.0 * u)
    out[:] = kv[i] + (kv[nxt] - kv[i]) * u
    out[times < kt[0]] = kv[0]
    return out


def stroke_activation(apex_t: np.ndarray, amp: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Steps 3-4 of the rule for one arm: activation over ``times`` from its strokes."""
    apex_t = np.asarray(apex_t, dtype=np.float64)
    amp = np.asarray(amp, dtype=np.float64)
    if apex_t.size == 0:
        return np.zeros_like(times)
    kt: list[float] = [apex_t[0] - REST_MARGIN]
    kv: list[float] = [0.0]
    for k in range(len(apex_t)):
        kt.append(apex_t[k])
        kv.append(amp[k])
        if k + 1 < len(apex_t):
            gap = apex_t[k + 1] - apex_t[k]
            if gap < PAUSE_GAP:
                kt.append(apex_t[k] + gap / 2)
                kv.append(RETRACT * min(amp[k], amp[k + 1]))
            else:
                kt += [apex_t[k] + REST_MARGIN, apex_t[k + 1] - REST_MARGIN]
                kv += [0.0, 0.0]
    kt.append(apex_t[-1] + REST_MARGIN)
    kv.append(0.0)
    return _smoothstep_track(kt, kv, times)


def _rot_x(theta):
    c, s = np.cos(theta), np.sin(theta)
    one, zero = np.ones_like(theta), np.zeros_like(theta)
    return np.stack([np.stack([one, zero, zero], -1), np.stack([zero, c, -s], -1),
                     np.stack([zero, s, c], -1)], -2)


def _rot_z(theta):
    c, s = np.cos(theta), np.sin(theta)
    one, zero = np.ones_like(theta), np.zeros_like(theta)
    return np.stack([np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], -2)


def _apply(rot: np.ndarray, vec: np.ndarray) -> np.ndarray:
    return np.einsum("tij,tj->ti", rot, vec)


def _rot_y(theta):
    c, s = np.cos(theta), np.sin(theta)
    one, zero = np.ones_like(theta), np.zeros_like(theta)
    return np.stack([np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1),
                     np.stack([-s, zero, c], -1)], -2)


def rest_pose(style: "SynthStyle | None" = None) -> np.ndarray:
    """(9, 3) rest directions of a style (default: the first built-in one).

    TED's mean pose, then per arm: upper arm abducted by ``rest_abduct`` degrees,
    forearm lowered by ``rest_lower`` and turned toward the body's midline by
    ``rest_inward`` degrees.
    """
    style = style or STYLES[0]
    dirs = TED_GESTURE.mean_pose().reshape(9, 3).astype(np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for sign, upper, fore in ((1.0, 4, 5), (-1.0, 7, 8)):  # left arm (-x side), right arm
        abduct = _rot_z(np.array([sign * np.radians(style.rest_abduct)]))[0]
        bend = (_rot_y(np.array([sign * np.radians(style.rest_inward)]))[0]
                @ _rot_x(np.array([-np.radians(style.rest_lower)]))[0])
        dirs[upper] = abduct @ dirs[upper]
        dirs[fore] = abduct @ bend @ dirs[fore]
    return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def _drift(rng: np.random.Generator, n: int, fps: float, degrees: float) -> np.ndarray:
    """Slow random drift: white noise low-passed by a ~1 s moving average, scaled to ``degrees`` std."""
    width = max(1, int(fps))
    noise = rng.standard_normal(n + 2 * width)
    smooth = np.convolve(noise, np.ones(width) / width, mode="same")[width:width + n]
    return np.radians(degrees) * smooth / (smooth.std() + 1e-9)


def motion_from_strokes(left: np.ndarray, right: np.ndarray, head: np.ndarray, style: SynthStyle,
                        rng: np.random.Generator, fps: float = POSE_FPS) -> np.ndarray:
    """Step 5 of the rule: per-frame activations -> (T, 27) unit bone directions."""
    n = len(left)
    t = np.arange(n) / fps
    rest = rest_pose(style)
    dirs = np.repeat(rest[None], n, axis=0)  # (T, 9, 3)
    for side, act, (shoulder, upper, fore) in (("left", left, (3, 4, 5)), ("right", right, (6, 7, 8))):
        sign = 1.0 if side == "left" else -1.0
        pitch = np.radians(25.0) * act + _drift(rng, n, fps, 2.0)
        abduct = sign * (np.radians(20.0) * style.abduction * act + _drift(rng, n, fps, 1.5))
        r_upper = np.einsum("tij,tjk->tik", _rot_z(abduct), _rot_x(pitch))
        r_elbow = _rot_x(np.radians(45.0) * act)
        dirs[:, upper] = _apply(r_upper, rest[upper][None].repeat(n, 0))
        dirs[:, fore] = _apply(r_upper, _apply(r_elbow, rest[fore][None].repeat(n, 0)))
        lift = sign * np.radians(1.5) * np.sin(2 * np.pi * 0.25 * t)
        dirs[:, shoulder] = _apply(_rot_z(lift), dirs[:, shoulder])
    nod = _rot_x(-np.radians(12.0) * style.nod * head)
    dirs[:, 1] = _apply(nod, dirs[:, 1])
    dirs[:, 2] = _apply(nod, dirs[:, 2])
    phase = rng.uniform(0, 2 * np.pi)
    sway = _rot_x(np.radians(1.5) * np.sin(2 * np.pi * 0.25 * t + phase))
    dirs = np.einsum("tij,tbj->tbi", sway, dirs)
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    return dirs.reshape(n, 27).astype(np.float32)


# ---------------------------------------------------------------------------
# clips


def _word_times(starts: list[float], limits: list[float], levels: np.ndarray,
                floor_db: float) -> list[tuple[float, float]]:
    """(start, end) of each word from its event time and its limit (next word's event or phrase end).

    start: the event time, moved forward to the first 10 ms frame above ``floor_db`` when
    the event precedes the sound (espeak reports a phrase's first word at sample 0);
    end: just after the last frame above the floor before the limit; at least 50 ms long.
    """
    out = []
    for s, limit in zip(starts, limits):
        j0, j1 = int(s / _HOP_S), int(limit / _HOP_S)
        loud = np.flatnonzero(levels[j0:j1] > floor_db)
        start = max(s, (j0 + loud[0]) * _HOP_S) if loud.size else s
        end = (j0 + loud[-1] + 1) * _HOP_S if loud.size else limit
        end = min(limit, max(end, start + 0.05))
        out.append((float(min(start, end - 0.01)), float(end)))
    return out


def synth_clip(rng: np.random.Generator, style: SynthStyle, clip_seconds: float = 10.0):
    """One clip -> (Clip, info dict). Deterministic given the generator's state."""
    pieces = [np.zeros(int(rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32)]
    offset = len(pieces[0]) / SAMPLE_RATE
    words: list[tuple[str, float]] = []
    phrase_ends: list[float] = []
    texts: list[str] = []
    while offset < clip_seconds:
        # ~2.5 words a second leaves a margin; unused phrases are dropped
        batch = [_phrase(rng) for _ in range(max(2, int((clip_seconds - offset) * 2.5 / 5) + 1))]
        pauses = rng.uniform(0.35, 1.2, size=len(batch))
        for text, (audio, timed), pause in zip(batch, speak_phrases(batch, style.voice, style.rate, style.pitch),
                                               pauses):
            if offset >= clip_seconds:
                break
            texts.append(text)
            words += [(w, offset + s) for w, s in timed]
            pieces.append(audio)
            offset += len(audio) / SAMPLE_RATE
            phrase_ends.append(offset)
            pieces.append(np.zeros(int(pause * SAMPLE_RATE), np.float32))
            offset += len(pieces[-1]) / SAMPLE_RATE
    audio = np.concatenate(pieces)
    n_frames = len(audio) * POSE_FPS // SAMPLE_RATE
    audio = audio[: -(-n_frames * SAMPLE_RATE // POSE_FPS)]  # whole frames: n_frames = S * fps // rate

    levels = _frame_levels(audio)
    floor_db = levels.max() - 35.0
    starts = [s for _, s in words]
    limits = []
    for i, s in enumerate(starts):
        phrase_end = next(e for e in phrase_ends if e > s)
        nxt = starts[i + 1] if i + 1 < len(starts) else phrase_end
        limits.append(min(nxt, phrase_end))
    times_se = _word_times(starts, limits, levels, floor_db)

    onsets = audio_onsets(audio, min_gap=style.min_gap)
    amps = style.amplitude * onset_loudness(audio, onsets)
    apex = onsets + style.lag
    times = np.arange(n_frames) / POSE_FPS
    if style.arms == "alternate":
        mask_l = (np.arange(len(apex)) % 2) == 1
        mask_r = ~mask_l
    else:
        mask_l = np.full(len(apex), style.arms in ("left", "both"))
        mask_r = np.full(len(apex), style.arms in ("right", "both"))
    left = stroke_activation(apex[mask_l], amps[mask_l], times)
    right = stroke_activation(apex[mask_r], amps[mask_r], times)
    head = stroke_activation(apex, amps, times)
    dir_vec = motion_from_strokes(left, right, head, style, rng)
    clip = make_clip(dir_vec, audio, [(w, s, e) for (w, _), (s, e) in zip(words, times_se)])
    info = {"text": " / ".join(texts), "stroke_time": [round(float(v), 4) for v in apex],
            "stroke_amp": [round(float(v), 4) for v in amps],
            "stroke_arm": ["L" if l else "R" if r else "-" for l, r in zip(mask_l, mask_r)] if style.arms != "both"
            else ["B"] * len(apex)}
    return clip, info


def clip_split(index: int) -> str:
    return "test" if index % 5 == 0 else "val" if index % 5 == 1 else "train"


def make_synthetic_corpus(out_dir: str | Path, n_clips: int = 40, seed: int = 0, clip_seconds: float = 10.0,
                          styles: tuple[SynthStyle, ...] | list[SynthStyle] = STYLES) -> Manifest:
    """Write ``n_clips`` clips into ``out_dir`` (hop-clips format) and return the manifest.

    Clip i uses style ``styles[i % len(styles)]`` and its own generator seeded with
    (seed, i), so clip i is the same whatever ``n_clips`` is.
    """
    styles = list(styles)
    if not styles:
        raise ValueError("need at least one style")
    description = (f"hop-live synthetic corpus: espeak-ng speech, rule-based gestures (training/data/synth.py), "
                   f"seed {seed}, {n_clips} clips of ~{clip_seconds:g} s")
    writer = ClipWriter(out_dir, skeleton="ted_gesture", description=description)
    for s in styles:
        writer.speaker_index(s.name)  # speaker ids follow the style order
    for i in range(n_clips):
        style = styles[i % len(styles)]
        rng = np.random.default_rng([seed, i])
        clip, info = synth_clip(rng, style, clip_seconds)
        source = {"generator": "hop-synth", "seed": seed, "index": i, "split": clip_split(i),
                  "style": asdict(style), **info}
        writer.add(f"synth_{seed}_{i:04d}", clip, speaker=style.name, source=source)
    return writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hop-make-synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="corpus directory to create (manifest.json + clips/)")
    parser.add_argument("--clips", type=int, default=40, help="number of clips (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0, help="approximate clip length (default 10)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = make_synthetic_corpus(args.out_dir, args.clips, args.seed, args.seconds)
    frames = sum(c.n_frames for c in manifest.clips)
    print(f"wrote {len(manifest.clips)} clips ({frames / POSE_FPS:.0f} s, speakers {manifest.speakers}) "
          f"to {args.out_dir} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
