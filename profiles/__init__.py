"""hop.profiles: named presets for the live engine, as TOML data.

A profile sets how the engine trades latency against smoothness and where its
outputs go by default. ``hop-live --profile NAME`` loads ``profiles/NAME.toml``
(or any path to a .toml file); command-line flags override what it sets. Every
key is checked: an unknown key or a bad value is refused with the key's name.
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
    max_frames_per_step: int = 2
    skip_backlog_frames: int = 2
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


@dataclass(frozen=True)
class MotionSettings:
    intensity: float = 1.0
    gate_by_voice: bool = True
    onset_s: float = 0.15
    release_s: float = 0.6
    smoothing_min_cutoff_hz: float = 2.0
    smoothing_beta: float = 0.4
    breathing_amount: float = 0.025
    sway_amount: float = 0.02


@dataclass(frozen=True)
class OutputSettings:
    osc_port: int = 9000
    vmc_port: int = 39539
    ws_port: int = 8765
    osc_control_port: int = 9001  # --osc-control without a port
    vmc_rig: str = "unity_humanoid"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    engine: EngineSettings
    motion: MotionSettings
    outputs: OutputSettings


_SECTIONS = {"engine": EngineSettings, "motion": MotionSettings, "outputs": OutputSettings}
_RANGES = {
    "engine.send_rate": (1.0, 240.0),
    "engine.max_frames_per_step": (1, 64),
    "engine.skip_backlog_frames": (1, 600),
    "engine.threads": (0, 256),
    "motion.intensity": (0.0, 3.0),
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
_CHOICES = {"engine.backend": ("eager", "compile", "tensorrt"), "engine.device": ("cpu", "cuda"),
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
        raise ProfileError(f"profile {str(path)!r} is not valid TOML: {error}") from None
    return parse_profile(data, path.stem)


def parse_profile(data: dict, default_name: str = "custom") -> Profile:
    allowed_top = {"name", "description", *_SECTIONS}
    unknown = sorted(set(data) - allowed_top)
    if unknown:
        raise ProfileError(f"unknown profile key(s) {unknown}; allowed: {sorted(allowed_top)}")
    sections = {}
    for section, cls in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ProfileError(f"[{section}] must be a table")
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in table.items():
            where = f"{section}.{key}"
            if key not in known:
                raise ProfileError(f"unknown profile key {where!r}; allowed in [{section}]: {sorted(known)}")
            values[key] = _check_value(where, value, type(getattr(cls(), key)))
        sections[section] = cls(**values)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ProfileError(f"profile key {key!r} must be a string")
    return Profile(name=data.get("name", default_name), description=data.get("description", ""), **sections)


def _check_value(where: str, value, expected: type):
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ProfileError(f"profile key {where!r} must be a {expected.__name__}, got {value!r}")
    if where in _RANGES:
        low, high = _RANGES[where]
        if not low <= value <= high:
            raise ProfileError(f"profile key {where!r} must be within {low}..{high}, got {value!r}")
    if where in _CHOICES and value not in _CHOICES[where]:
        raise ProfileError(f"profile key {where!r} must be one of {list(_CHOICES[where])}, got {value!r}")
    return value
