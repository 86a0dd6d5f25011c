"""hop.profiles: the engine's settings, as one typed model, and named presets of it in TOML.

The setting types live here and nowhere else: ``EngineSettings`` (how the model runs
and is paced), ``MotionOptions`` (what the avatar does between model and wire) and
``OutputSettings`` (where outputs go by default). A run's options
(hop.engine.session.SessionOptions) hold one of each beside its inputs and outputs;
the live driver, the motion shaper and the control inputs take them as they are.
Every range is declared once, in ``RANGES``, and checked by ``check()``.

``hop-live --profile NAME`` loads ``profiles/NAME.toml`` (or any path to a .toml
file); command-line flags override what it sets. Every key is checked: an unknown
key or a bad value is refused with the key's name, the file and the valid keys.
The pose rate is not a profile setting: it belongs to the checkpoint.

Rig definitions used by the retargeting bridges live in ``profiles/rigs/``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent
DEFAULT_PROFILE = "balanced"


class ProfileError(ValueError):
    pass


LM_WEIGHTS = ("fp32", "bf16", "int8")  # formats of the frozen LM's linear weights


@dataclass(frozen=True)
class EngineSettings:
    send_rate: float = 60.0  # Hz on the wire; >= the model's pose rate
    max_frames_per_step: int = 2  # a backlog up to this is computed in one model call
    skip_backlog_frames: int = 2  # a larger backlog is skipped, never queued
    audio_delay_s: float = 0.0  # hold poses back to line up with audio the audience hears later
    idle_after_s: float = 0.3  # no audio this long (device lost, not started): idle motion on the wall clock
    backend: str = "eager"  # eager | compile | tensorrt
    device: str = "cpu"  # cpu | cuda
    # torch intra-op threads; 0 keeps torch's default. One by default: on a small,
    # shared CPU (capture, ASR and outputs run beside the model) a second OpenMP
    # thread spin-waiting for a descheduled partner turns 2 ms steps into 100 ms ones.
    threads: int = 1
    # The frozen LM's linear weights: fp32, bf16 (CPUs with AVX512-BF16/AMX, or CUDA) or
    # int8 (eager CPU only; quickest, least exact: see README "Measured performance").
    lm_weights: str = "fp32"
    asr: bool = True

    def __post_init__(self):
        check("engine", self)
        if self.skip_backlog_frames < self.max_frames_per_step:
            raise ProfileError("engine.skip_backlog_frames must be >= engine.max_frames_per_step, got "
                               f"{self.skip_backlog_frames} < {self.max_frames_per_step}")


@dataclass(frozen=True)
class MotionOptions:
    intensity: float = 1.0  # 0 rest .. 1 as generated .. 3 (RANGES)
    gate_by_voice: bool = True  # False: the model's motion is shown in silence too
    onset_s: float = 0.15  # idle -> model crossfade at speech onset
    release_s: float = 0.6  # model -> idle after speech ends
    smoothing_min_cutoff_hz: float = 2.0  # One Euro: lower = smoother at rest (0 disables smoothing)
    smoothing_beta: float = 0.4  # One Euro: higher = less lag on fast moves
    breathing_hz: float = 0.22
    breathing_amount: float = 0.025  # peak bone-direction offset (about radians)
    sway_amount: float = 0.02
    seed: int = 0
    pose_fps: float = 30.0  # set from the checkpoint by the pipeline, not by profiles

    def __post_init__(self):
        check("motion", self)


@dataclass(frozen=True)
class OutputSettings:
    osc_port: int = 9000
    vmc_port: int = 39539
    ws_port: int = 8765
    osc_control_port: int = 9001  # --osc-control without a port
    vmc_rig: str = "unity_humanoid"

    def __post_init__(self):
        check("outputs", self)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    engine: EngineSettings
    motion: MotionOptions
    outputs: OutputSettings


_SECTIONS = {"engine": EngineSettings, "motion": MotionOptions, "outputs": OutputSettings}
_NOT_IN_PROFILES = {"motion.pose_fps"}  # belongs to the checkpoint
INTENSITY_RANGE = (0.0, 3.0)
RANGES = {
    "engine.send_rate": (1.0, 240.0),
    "engine.max_frames_per_step": (1, 64),
    "engine.skip_backlog_frames": (1, 600),
    "engine.audio_delay_s": (0.0, 5.0),
    "engine.idle_after_s": (0.01, 60.0),
    "engine.threads": (0, 256),
    "motion.intensity": INTENSITY_RANGE,
    "motion.breathing_hz": (0.0, 5.0),
    "motion.pose_fps": (1.0, 240.0),
    "motion.onset_s": (0.0, 5.0),
    "motion.release_s": (0.0, 10.0),
    "motion.smoothing_min_cutoff_hz": (0.0, 100.0),
    "motion.smoothing_beta": (0.0, 100.0),
    "motion.breathing_amount": (0.0, 0.3),
    "motion.sway_amount": (0.0, 0.3),
    "outputs.osc_port": (1, 65535),
    "outputs.vmc_port": (1, 65535),
    "outputs.ws_port": (0, 65535),
    "outputs.osc_control_port": (0, 65535),
}
CHOICES = {"engine.backend": ("eager", "compile", "tensorrt"), "engine.device": ("cpu", "cuda"),
            "engine.lm_weights": LM_WEIGHTS}


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ProfileError(f"no profile {str(name_or_path)!r}; built-in profiles: {', '.join(available_profiles())}"
                           " (or give the path of a .toml file)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None
    return parse_profile(data, path.stem, source=str(path))


def parse_profile(data: dict, default_name: str = "custom", source: str = "profile") -> Profile:
    """``source`` names where ``data`` came from (a file's path) in every error."""
    allowed_top = {"name", "description", *_SECTIONS}
    unknown = sorted(set(data) - allowed_top)
    if unknown:
        raise ProfileError(f"{source}: unknown key(s) {unknown}; valid top-level keys: {sorted(allowed_top)}")
    sections = {}
    for section, cls in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ProfileError(f"{source}: [{section}] must be a table")
        known = sorted(f.name for f in fields(cls) if f"{section}.{f.name}" not in _NOT_IN_PROFILES)
        values = {}
        for key, value in table.items():
            if key not in known:
                raise ProfileError(f"{source}: unknown key '{section}.{key}'; valid keys in [{section}]: {known}")
            values[key] = _typed(f"{section}.{key}", value, type(getattr(cls(), key)))
        try:
            sections[section] = cls(**values)
        except ProfileError as error:
            raise ProfileError(f"{source}: {error}") from None
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ProfileError(f"{source}: key {key!r} must be a string")
    return Profile(name=data.get("name", default_name), description=data.get("description", ""), **sections)


def check(section: str, settings) -> None:
    """Every field of ``settings`` (a section's dataclass) against RANGES and CHOICES."""
    for f in fields(settings):
        where, value = f"{section}.{f.name}", getattr(settings, f.name)
        if where in RANGES:
            low, high = RANGES[where]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ProfileError(f"'{where}' must be within {low}..{high}, got {value!r}")
        if where in CHOICES and value not in CHOICES[where]:
            raise ProfileError(f"'{where}' must be one of {list(CHOICES[where])}, got {value!r}")


def _typed(where: str, value, expected: type):
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ProfileError(f"'{where}' must be a {expected.__name__}, got {value!r}")
    return value
