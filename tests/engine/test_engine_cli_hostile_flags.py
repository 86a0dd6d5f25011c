"""Every hop-live flag with hostile values: empty, negative, huge, NaN, the wrong type, a path
that does not exist, a directory, a file of the wrong kind. Each must end with exit status 2
and ONE line on stderr naming the flag (and the value, unless it is a secret) with what is
accepted, never a traceback, and before the model loads (no "checkpoint ... (trained on" note).

The table runs in-process (``hop.engine.cli.main([...])``), a few cases through the real
console script too.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from hop.engine import cli
from hop.engine.audio_file import AudioFileError, read_audio_info

HOP_LIVE = Path(sys.executable).with_name("hop-live")
MODEL_LOADED = "(trained on"  # in the note hop-live prints once the model has loaded


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((0.1 * np.sin(np.arange(int(seconds * rate)) / 9) * 32767).astype("<i2").tobytes())
    return path


def wav_with_header(path: Path, rate: int, channels: int, bits: int = 16, data: bytes = bytes(4096)) -> Path:
    """A RIFF WAV whose header claims ``rate`` Hz and ``channels`` (values a real file never has)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    made = {
        "dir": folder / "a_folder",
        "wav": write_wav(folder / "good.wav"),
        "text": folder / "notes.txt",
        "random": folder / "random.bin",
        "empty": folder / "empty.txt",
        "missing": folder / "no" / "such" / "file.wav",
        "toml_bad": folder / "bad.toml",
        "wav_1hz": wav_with_header(folder / "1hz.wav", 1, 1),
        "wav_4ghz": wav_with_header(folder / "4ghz.wav", 4_000_000_000, 1),
        "wav_65535ch": wav_with_header(folder / "65535ch.wav", 16000, 65535, bits=8, data=bytes(65535 * 4)),
        "token_ok": folder / "token.txt",
        "out": folder / "out.bvh",
    }
    made["dir"].mkdir()
    made["text"].write_text("hello, not a checkpoint\n")
    made["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    made["empty"].write_bytes(b"")
    made["toml_bad"].write_text("[engine\nsend_rate = \n")
    made["token_ok"].write_text("tok-" + "x" * 28 + "\n")
    return made


def hostile_cases(f: dict) -> dict[str, list[str]]:
    """name -> argv. Every case would otherwise be a valid quick offline conversion."""
    wav, out = str(f["wav"]), str(f["out"])
    base = ["--input", wav, "--fast", "--no-asr", "--bvh", out]  # valid on its own
    live = ["--no-asr", "--bvh", out]  # for flags of live input (--mic, --samplerate)
    d, txt, rnd, empty, missing = str(f["dir"]), str(f["text"]), str(f["random"]), str(f["empty"]), str(f["missing"])
    cases: dict[str, list[str]] = {}

    def add(flag: str, values: dict[str, str], before: list[str] = base, after: list[str] = ()):
        for kind, value in values.items():
            cases[f"{flag} {kind}"] = [*before, flag, value, *after]

    numbers = {"empty": "", "word": "abc", "nan": "nan", "inf": "inf", "huge": "1e999", "negative": "-1"}
    add("--intensity", {**numbers, "above": "3.5", "big": "1e12"})
    add("--audio-delay", {**numbers, "above": "5.5"})
    add("--duration", {**numbers, "zero": "0"})
    add("--samplerate", {**numbers, "zero": "0", "1hz": "1", "4ghz": "4e9"}, before=live + ["--mic", "default"])
    cases["--samplerate without --mic"] = base + ["--samplerate", "48000"]
    add("--mic", {"empty": "", "no such index": "4096", "negative": "-1", "no such name": "no-such-microphone"},
        before=live)
    cases["--mic and --input"] = base + ["--mic", "default"]

    add("--input", {"empty": "", "missing": missing, "dir": d, "text": txt, "random": rnd, "empty file": empty,
                    "1 Hz header": str(f["wav_1hz"]), "4 GHz header": str(f["wav_4ghz"]),
                    "65535 channels": str(f["wav_65535ch"])}, before=["--fast", "--no-asr", "--bvh", out])
    add("--checkpoint", {"empty": "", "missing": missing, "dir": d, "text": txt, "wav": wav, "random": rnd,
                         "empty file": empty})
    add("--profile", {"empty": "", "missing": "no-such-profile", "dir": d + ".toml", "text": txt,
                      "bad toml": str(f["toml_bad"])})
    add("--bvh", {"empty": "", "dir": d, "missing folder": missing}, before=["--input", wav, "--fast", "--no-asr"])
    add("--stats-json", {"empty": "", "dir": d, "under a file": txt + "/stats.json"})
    add("--out", {"empty": "", "a file": txt}, before=["--demo", "--fast", "--no-asr", "--bvh", out])

    ports = {"empty": "", "no port": "127.0.0.1", "port 0": "127.0.0.1:0", "negative": "127.0.0.1:-1",
             "huge": "127.0.0.1:99999999999999999999", "nan": "127.0.0.1:nan", "above": "127.0.0.1:65536",
             "bad host": "bad host!:9000", "ipv6 bare": "::1:9000", "unresolvable": "no-such-host.invalid:9000"}
    add("--osc", ports)
    add("--vmc", {k: v for k, v in ports.items() if k not in ("no port",)})
    listen = {"empty": "", "word": "abc", "negative": "-1", "huge": "99999999999999999999", "above": "70000",
              "nan": "nan", "bad host": "bad host!:8765", "remote": "0.0.0.0:8765"}
    add("--ws", listen)
    add("--osc-control", {**listen, "remote": "0.0.0.0:9001"})
    add("--ws-token", {"empty": "", "short": "short", "spaces": "has spaces and is long enough"},
        after=["--ws", "0"])
    add("--ws-token-file", {"empty": "", "missing": missing, "dir": d, "empty file": empty, "random": rnd},
        after=["--ws", "0"])
    cases["--ws-token and --ws-token-file"] = base + ["--ws", "0", "--ws-token", "x" * 20, "--ws-token-file",
                                                      str(f["token_ok"])]
    cases["--ws remote with --ws-allow-remote and no token"] = base + ["--ws", "0.0.0.0:0", "--ws-allow-remote"]

    add("--style", {"empty": "", "nan vector": ",".join(["nan"] * 8), "inf vector": ",".join(["inf"] * 8),
                    "float32 overflow": ",".join(["1e39"] * 8), "short vector": "1,2", "word": "garbage",
                    "speaker negative": "speaker:-1", "speaker huge": "speaker:999999", "seed word": "sample:abc",
                    "speaker word": "speaker:x"})
    add("--device", {"empty": "", "word": "gpu", "cuda without a GPU": "cuda"})
    add("--backend", {"empty": "", "word": "fast", "tensorrt on cpu": "tensorrt"})
    add("--lm-weights", {"empty": "", "word": "int4"})
    cases["--lm-weights int8 with compile"] = base + ["--lm-weights", "int8", "--backend", "compile"]
    if any("--avatar" in a.option_strings for a in cli.build_parser()._actions):
        add("--avatar", {"empty": "", "missing": missing, "dir": d, "text": txt}, after=["--vmc", "127.0.0.1"])
    for flag in ("--demo", "--fast", "--loop", "--no-asr", "--stats", "--ws-allow-remote", "--list-devices"):
        cases[f"{flag}=value"] = base + [f"{flag}=1"]
    cases["--fast without --input"] = ["--fast", "--bvh", out]
    cases["--loop with --fast"] = base + ["--loop"]
    cases["no output"] = ["--input", wav, "--fast"]
    cases["unknown flag"] = base + ["--no-such-flag"]
    cases["--help=value"] = ["--help=1"]
    return cases


# What some messages must say (the misleading ones among them).
SAYS = {
    "--input dir": "is a directory",
    "--input missing": "no such file",
    "--input 1 Hz header": "1 channels at 1 Hz",
    "--input 4 GHz header": "cannot be decoded",  # libsndfile refuses it before any check of ours
    "--input 65535 channels": "Too many channels",  # likewise
    "--checkpoint text": "is not a hop-live checkpoint",
    "--checkpoint wav": "is not a hop-live checkpoint",
    "--checkpoint random": "is not a hop-live checkpoint",
    "--checkpoint dir": "is a directory",
    "--ws word": "not a port number",
    "--ws above": "PORT in 0..65535 (0: any free port)",
    "--osc port 0": "PORT in 1..65535",
    "--osc-control above": "PORT in 0..65535 (0: any free port)",
    "--style nan vector": "not finite",
    "--style speaker huge": "out of range",
    "--osc unresolvable": "cannot resolve host",
    "--ws remote": "not a loopback address",
}


def test_the_table_covers_every_flag(files):
    flags = {option for action in cli.build_parser()._actions for option in action.option_strings
             if option.startswith("--")}
    named = {word.split("=")[0] for argv in hostile_cases(files).values() for word in argv if word.startswith("--")}
    assert flags <= named, f"flags without a hostile case: {sorted(flags - named)}"


def test_every_hostile_value_is_one_line_and_exit_2_before_the_model_loads(files, capsys, monkeypatch):
    monkeypatch.delenv("HOP_LIVE_WS_TOKEN", raising=False)
    bad = []
    for name, argv in hostile_cases(files).items():
        started = time.monotonic()
        code = cli.main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        flag = name.split()[0].split("=")[0]
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines")
        if "Traceback" in err or MODEL_LOADED in err:
            problems.append("traceback or model loaded")
        if lines and not lines[0].startswith("hop-live: "):
            problems.append("not a hop-live message")
        if flag.startswith("--") and flag not in ("--help",) and lines and flag not in lines[0] \
                and "unrecognized" not in lines[0]:
            problems.append(f"does not name {flag}")
        if time.monotonic() - started > 5:
            problems.append(f"took {time.monotonic() - started:.1f} s")
        if name in SAYS and SAYS[name] not in err:
            problems.append(f"does not say {SAYS[name]!r}")
        if problems:
            bad.append(f"{name}: {', '.join(problems)}: {err.strip()[:300]!r}")
    assert not bad, "\n".join(bad)


def test_good_values_pass(files, tmp_path, monkeypatch):
    """The checks refuse what cannot work, not what merely looks unusual."""
    from hop.engine.session import validate

    monkeypatch.delenv("HOP_LIVE_WS_TOKEN", raising=False)
    wav = str(files["wav"])
    good = [
        ["--demo", "--fast", "--out", str(tmp_path / "new" / "folder")],  # --out is made by the run
        ["--input", wav, "--ws", "0", "--osc-control"],
        ["--input", wav, "--ws", "127.0.0.1:0", "--osc-control", "0", "--stats-json", str(tmp_path / "a/b/s.json")],
        ["--input", wav, "--osc", "[::1]:9000", "--vmc", "localhost", "--vmc", "127.0.0.1:39540"],
        ["--input", wav, "--bvh", str(tmp_path / "x.bvh"), "--style", "speaker:1", "--intensity", "0"],
        ["--input", wav, "--bvh", str(tmp_path / "x.bvh"), "--style", "sample:5", "--intensity", "3",
         "--audio-delay", "0.25", "--duration", "1e6"],
        ["--input", wav, "--bvh", str(tmp_path / "x.bvh"), "--style", ",".join(["0.5"] * 8), "--loop"],
        ["--input", wav, "--ws", "0", "--ws-token-file", str(files["token_ok"])],
    ]
    for argv in good:
        validate(cli.options_from_args(cli.build_parser().parse_args(argv)))


def test_the_token_comes_from_a_file_or_the_environment(files, monkeypatch):
    base = ["--input", str(files["wav"]), "--fast", "--ws", "0"]
    monkeypatch.delenv("HOP_LIVE_WS_TOKEN", raising=False)
    options = cli.options_from_args(cli.build_parser().parse_args(base + ["--ws-token-file", str(files["token_ok"])]))
    assert options.ws_token == files["token_ok"].read_text().strip()
    monkeypatch.setenv("HOP_LIVE_WS_TOKEN", "from-the-environment-0123")
    assert cli.options_from_args(cli.build_parser().parse_args(base)).ws_token == "from-the-environment-0123"


def test_a_secret_is_never_echoed(files, capsys):
    secret = "has spaces and is a secret value"
    assert cli.main(["--input", str(files["wav"]), "--fast", "--no-asr", "--ws", "0", "--ws-token", secret]) == 2
    assert "secret value" not in capsys.readouterr().err
    files["token_ok"].with_name("bad-token.txt").write_text("another secret value, with spaces\n")
    assert cli.main(["--input", str(files["wav"]), "--fast", "--no-asr", "--ws", "0", "--ws-token-file",
                     str(files["token_ok"].with_name("bad-token.txt"))]) == 2
    assert "secret value" not in capsys.readouterr().err


def test_ports_are_described_the_same_way_everywhere(files, capsys):
    """Destinations 1..65535; a port we listen on 0..65535 where 0 means any free port."""
    messages = {}
    for flag, value in (("--osc", "127.0.0.1:0"), ("--vmc", "127.0.0.1:70000"), ("--ws", "70000"),
                        ("--osc-control", "70000")):
        assert cli.main(["--input", str(files["wav"]), "--fast", "--no-asr", "--bvh", str(files["out"]),
                         flag, value]) == 2
        messages[flag] = capsys.readouterr().err
    assert "PORT in 1..65535" in messages["--osc"] and "PORT in 1..65535" in messages["--vmc"]
    for flag in ("--ws", "--osc-control"):
        assert "PORT in 0..65535 (0: any free port)" in messages[flag], messages[flag]


def test_a_busy_port_is_named_before_the_model_loads(files, capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert cli.main(["--input", str(files["wav"]), "--fast", "--no-asr", "--ws", str(busy.getsockname()[1])]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert "--ws 127.0.0.1:" in err and "cannot listen there" in err and "--ws-port" not in err, err


def test_absurd_wav_headers_are_refused_at_the_door(files):
    from hop.engine.audio_file import check_audio_format

    for name, message in (("wav_1hz", "1 Hz"), ("wav_4ghz", "cannot be decoded"), ("wav_65535ch", "Too many channels")):
        with pytest.raises(AudioFileError, match=message):
            read_audio_info(files[name])
    check_audio_format(8000, 2)
    check_audio_format(768_000, 64)
    for rate, channels in ((999, 1), (768_001, 1), (float("nan"), 1), (16000, 0), (16000, 65)):
        with pytest.raises(AudioFileError):
            check_audio_format(rate, channels)


def test_the_console_script_too(files, tmp_path):
    """A few cases through the real entry point: one line, exit 2, before the model loads."""
    cases = {  # two that used to end in a traceback (OverflowError; IndexError from torch.load)
        "osc-control 70000": ["--osc-control", "70000"],
        "checkpoint is a text file": ["--checkpoint", str(files["text"])],
    }
    base = ["--input", str(files["wav"]), "--fast", "--no-asr", "--bvh", str(tmp_path / "x.bvh")]
    command = [str(HOP_LIVE)] if HOP_LIVE.exists() else [sys.executable, "-m", "hop.engine.cli"]
    env = {k: v for k, v in os.environ.items() if k != "HOP_LIVE_WS_TOKEN"}
    running = {name: subprocess.Popen(command + base + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env) for name, argv in cases.items()}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, (name, process.returncode, err[-2000:])
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and MODEL_LOADED not in err, (name, err)
        assert "weights_only" not in err, "never advise unpickling an untrusted file"
