"""Profiles: every shipped preset loads; unknown keys and bad values are refused by name."""

import pytest

from hop.engine.cli import build_parser, options_from_args
from hop.profiles import ProfileError, available_profiles, load_profile, parse_profile


def test_every_shipped_profile_loads():
    names = available_profiles()
    assert {"balanced", "low-latency", "smooth", "gpu"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.description


@pytest.mark.parametrize("data, message", [
    ({"engine": {"send_rat": 60.0}}, "'engine.send_rat'"),
    ({"motion": {"intensity": 9.0}}, "'motion.intensity' must be within 0.0..3.0"),
    ({"engine": {"backend": "onnx"}}, "'engine.backend' must be one of"),
    ({"engine": {"lm_weights": "int4"}}, "'engine.lm_weights' must be one of"),
    ({"engine": {"asr": "yes"}}, "'engine.asr' must be a bool"),
    ({"outputs": {"osc_port": 70000}}, "'outputs.osc_port'"),
    ({"extras": {}}, "unknown key"),
])
def test_bad_profiles_name_the_key(data, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(data)


def test_integers_are_accepted_for_float_settings():
    assert parse_profile({"engine": {"send_rate": 90}}).engine.send_rate == 90.0


def test_cli_flags_override_the_profile(tmp_path):
    custom = tmp_path / "mine.toml"
    custom.write_text('[engine]\nsend_rate = 45.0\nasr = true\n[motion]\nintensity = 0.5\n')
    args = build_parser().parse_args(["--input", "x.wav", "--osc", "127.0.0.1:9000", "--profile", str(custom),
                                      "--no-asr", "--intensity", "1.5", "--vmc", "10.0.0.2", "--lm-weights", "int8"])
    options = options_from_args(args)
    assert options.engine.send_rate == 45.0 and options.engine.asr is False and options.engine.lm_weights == "int8"
    assert options.motion.intensity == 1.5
    kinds = {(o.kind, o.host, o.port) for o in options.outputs}
    assert kinds == {("osc", "127.0.0.1", 9000), ("vmc", "10.0.0.2", 39539)}


def test_unknown_profile_lists_the_built_in_ones():
    with pytest.raises(ProfileError, match="built-in profiles: .*balanced"):
        load_profile("nope")


def test_an_unknown_key_names_itself_the_file_and_the_valid_keys(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[motion]\nintensty = 0.5\n')
    with pytest.raises(ProfileError) as error:
        load_profile(path)
    message = str(error.value)
    assert "'motion.intensty'" in message and str(path) in message and "'intensity'" in message, message
    # the pose rate belongs to the checkpoint: not a profile key
    with pytest.raises(ProfileError, match="unknown key 'motion.pose_fps'"):
        parse_profile({"motion": {"pose_fps": 15.0}})


def test_settings_check_their_ranges_wherever_they_are_made():
    """One place holds every range: the profile loader, the CLI and code all meet the same check."""
    from hop.profiles import EngineSettings, MotionOptions
    with pytest.raises(ProfileError, match="'engine.audio_delay_s' must be within 0.0..5.0"):
        EngineSettings(audio_delay_s=9.0)
    with pytest.raises(ProfileError, match="skip_backlog_frames must be >="):
        EngineSettings(max_frames_per_step=4, skip_backlog_frames=2)
    with pytest.raises(ProfileError, match="'motion.intensity' must be within 0.0..3.0"):
        MotionOptions(intensity=3.5)
