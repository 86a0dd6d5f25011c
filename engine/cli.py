"""hop-live: speech in (microphone or file), pose frames out (OSC, VMC, WebSocket, BVH).

    hop-live --mic default --osc 127.0.0.1:9000
    hop-live --input talk.wav --vmc 127.0.0.1 --ws 8765 --stats
    hop-live --input talk.wav --fast --bvh talk.bvh          # offline conversion
    hop-live --demo                                           # built-in sample, no mic needed
    hop-live --demo --mic default                             # the same outputs, live from the microphone

Every flag and input file is checked before the model loads: a value that cannot be used
ends the run with exit status 2 and one line naming the flag, the value and what is accepted.

Ctrl-C, SIGTERM and SIGHUP stop cleanly: audio already captured is turned into frames, outputs
are closed, a BVH is finished, the summary printed, exit 0. A second one skips what is left of
that drain (outputs are still closed and the summary printed) and exits 130 (128 + signal).

The WebSocket token: HOP_LIVE_WS_TOKEN or --ws-token-file FILE (--ws-token TOKEN works too,
but every user of the machine sees it in `ps`). It is never printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from hop.engine.session import (DEMO_SPEECH, LISTEN_PORTS, OutputSpec, SessionError, SessionOptions, UsageError,
                                build_session, parse_host_port, validate)
from hop.model.checkpoint import BUILTIN_CHECKPOINTS, DEFAULT_BUILTIN
from hop.profiles import (DEFAULT_PROFILE, LM_WEIGHTS, RANGES, ProfileError, available_profiles, load_profile)

TOKEN_ENV = "HOP_LIVE_WS_TOKEN"
_DEFAULT_PORT = object()  # --osc-control without a value (an explicit '' is an empty value, refused)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (no usage block) and exit status 2."""

    def error(self, message: str):
        raise UsageError(f"{message.removeprefix('argument ')} (hop-live --help lists the flags)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hop-live", description="Real-time co-speech gestures from speech.",
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--mic", metavar="NAME|INDEX", help="capture from a microphone ('default' = the system's)")
    src.add_argument("--input", metavar="FILE", help="play a WAV file at real-time pace, exit at its end")
    src.add_argument("--demo", action="store_true",
                     help="local OSC/WebSocket, BVH, GIF and latency plot in --out; input: the built-in speech "
                          "sample unless --mic or --input is given")
    src.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--fast", action="store_true", help="with --input: as fast as possible (offline conversion)")
    p.add_argument("--loop", action="store_true", help="with --input: start over at the end (until stopped)")
    p.add_argument("--samplerate", metavar="HZ", help="microphone sample rate (default: the device's)")

    out = p.add_argument_group("outputs (any number)")
    out.add_argument("--osc", action="append", default=[], metavar="HOST:PORT",
                     help="native /hop/... OSC stream (see bridges/README.md)")
    out.add_argument("--vmc", action="append", default=[], metavar="HOST[:PORT]",
                     help="VMC protocol (EVMC4U, VMC4UE, VSeeFace, VMC4B); default port 39539")
    out.add_argument("--avatar", metavar="FILE",
                     help="with --vmc: the receiver's avatar (.vrm VRM 0.x/1.0, or .glb with a humanoid); bone "
                          "positions sent are then its own rest offsets (see bridges/README.md)")
    out.add_argument("--ws", action="append", default=[], metavar="[HOST:]PORT",
                     help="WebSocket stream + browser viewer (loopback unless --ws-allow-remote; port 0: any free "
                          "port)")
    out.add_argument("--ws-allow-remote", action="store_true", help="allow binding --ws to a non-loopback address")
    out.add_argument("--ws-token-file", metavar="FILE",
                     help=f"file holding the token WebSocket clients must send (or set {TOKEN_ENV}); required "
                          "with --ws-allow-remote")
    out.add_argument("--ws-token", metavar="TOKEN",
                     help=f"the token itself (visible in `ps` to every user: prefer {TOKEN_ENV} or --ws-token-file)")
    out.add_argument("--bvh", metavar="FILE", help="record a BVH file")
    out.add_argument("--osc-control", nargs="?", const=_DEFAULT_PORT, metavar="[HOST:]PORT",
                     help="OSC control input /hop/control/intensity|mute|style (loopback; profile port 9001; "
                          "port 0: any free port)")

    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", metavar="FILE",
                       help=f"a checkpoint from hop-train or a built-in name: {', '.join(BUILTIN_CHECKPOINTS)} "
                            f"(default: {DEFAULT_BUILTIN}; the README gives each one's data and licence)")
    model.add_argument("--profile", default=DEFAULT_PROFILE,
                       help=f"preset name or .toml path (built-in: {', '.join(available_profiles())})")
    model.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (profile default: cpu)")
    model.add_argument("--backend", choices=("eager", "compile", "tensorrt"), help="how the model step runs")
    model.add_argument("--lm-weights", choices=LM_WEIGHTS,
                       help="the frozen LM's weights (profile default fp32; int8: quickest, eager CPU only)")
    model.add_argument("--style", default="neutral",
                       help="neutral | sample[:SEED] | speaker:N | comma-separated style vector")
    model.add_argument("--intensity", metavar="X", help="gesture size: 0 rest .. 1 as generated .. 3")
    model.add_argument("--no-asr", action="store_true", help="no speech recognition: audio alone drives semantics")
    model.add_argument("--audio-delay", metavar="SECONDS",
                       help="hold poses back this long to match audio the audience hears late")

    run = p.add_argument_group("running")
    run.add_argument("--stats", action="store_true", help="live status line on the terminal")
    run.add_argument("--stats-json", metavar="FILE", help="write the status figures as JSON (updated live)")
    run.add_argument("--duration", metavar="SECONDS", help="stop after this many seconds")
    run.add_argument("--out", default="out", metavar="DIR", help="--demo: folder for its files (default ./out)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.list_devices:
            from hop.engine.capture import format_device_list
            print(format_device_list())
            return 0
        options = options_from_args(args)
        validate(options, devices=True)  # every value and file, before the model loads
    except (ProfileError, SessionError, ValueError) as error:
        return _fail(error, 2)
    if args.ws_token is not None:
        print(f"hop-live: warning: --ws-token is visible to every user of this machine (ps); use {TOKEN_ENV} or "
              "--ws-token-file FILE instead", file=sys.stderr)

    stop = threading.Event()
    signals: list[int] = []
    running: list = []  # the session, once built

    def on_signal(signum, _frame):
        signals.append(signum)
        name = signal.Signals(signum).name
        if len(signals) == 1:
            print(f"\nhop-live: {name}, stopping (again to skip the rest)", file=sys.stderr, flush=True)
            stop.set()
        elif len(signals) == 2:
            print(f"hop-live: {name} again, skipping the rest of the drain; closing outputs", file=sys.stderr,
                  flush=True)
            if running:
                running[0].hurry()
            else:
                raise KeyboardInterrupt  # still loading: nothing to drain or close yet
        else:  # a third: the user means now, closed or not
            print(f"hop-live: {name} a third time, exiting at once", file=sys.stderr, flush=True)
            os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        session = build_session(options)
        running.append(session)
        report = session.run(stop)
    except KeyboardInterrupt:
        print("hop-live: stopped before the run started", file=sys.stderr)
        return 128 + signals[-1] if signals else 130
    except UsageError as error:
        return _fail(error, 2)
    except SessionError as error:
        return _fail(error, 1)
    print(json.dumps(report["summary"], indent=2), flush=True)
    return 128 + signals[1] if len(signals) > 1 else 0


def _fail(error: BaseException, code: int) -> int:
    print(f"hop-live: {' '.join(str(error).split())}", file=sys.stderr)
    return code


# -- the command line as options ---------------------------------------------------------------

def options_from_args(args) -> SessionOptions:
    """The parsed command line as SessionOptions; UsageError naming the flag for a value that cannot
    be one. Files and devices are looked at by hop.engine.session.validate."""
    try:
        profile = load_profile(_text("--profile", args.profile))
    except ProfileError as error:
        raise UsageError(f"--profile {args.profile!r}: {error}") from None
    # --demo picks the outputs (local OSC + WebSocket, BVH, GIF, latency plot) and, when no
    # --mic or --input is given, the built-in speech sample as the input.
    sources = [name for name, given in (("--mic", args.mic is not None), ("--input", args.input is not None))
               if given]
    if len(sources) > 1:
        raise UsageError(f"choose one input, not {' and '.join(sources)}")
    demo_sample = args.demo and not sources
    if (args.fast or args.loop) and not (args.input is not None or demo_sample):
        raise UsageError("--fast and --loop apply to --input files")
    if args.fast and args.loop:
        raise UsageError("--fast converts a file once; --loop plays one until stopped: choose one")
    mic = _text("--mic", args.mic) if args.mic is not None else None
    samplerate = _number("--samplerate", args.samplerate) if args.samplerate is not None else None
    if samplerate is not None and mic is None:
        raise UsageError("--samplerate applies to --mic (a file's rate is in its header)")

    engine = profile.engine
    if args.device:
        engine = replace(engine, device=args.device)
    if args.backend:
        engine = replace(engine, backend=args.backend)
    if args.no_asr:
        engine = replace(engine, asr=False)
    if args.lm_weights:
        engine = replace(engine, lm_weights=args.lm_weights)
    if args.audio_delay is not None:
        engine = replace(engine, audio_delay_s=_ranged("--audio-delay", args.audio_delay, "engine.audio_delay_s"))
    motion = profile.motion
    if args.intensity is not None:
        motion = replace(motion, intensity=_ranged("--intensity", args.intensity, "motion.intensity"))
    ports = profile.outputs

    outputs = [OutputSpec("osc", *parse_host_port(spec, None, flag="--osc")) for spec in args.osc]
    outputs += [OutputSpec("vmc", *parse_host_port(spec, ports.vmc_port, flag="--vmc")) for spec in args.vmc]
    outputs += [OutputSpec("ws", *parse_host_port(spec, ports.ws_port, flag="--ws", ports=LISTEN_PORTS,
                                                  port_only=True)) for spec in args.ws]
    out_dir = None
    if args.demo:
        out_dir = Path(_text("--out", args.out))
        if not args.osc:
            outputs.append(OutputSpec("osc", "127.0.0.1", ports.osc_port))
        if not args.ws:
            outputs.append(OutputSpec("ws", "127.0.0.1", ports.ws_port))
        bvh = Path(_text("--bvh", args.bvh)) if args.bvh is not None else out_dir / "demo.bvh"
    else:
        bvh = Path(_text("--bvh", args.bvh)) if args.bvh is not None else None
    if bvh is not None:
        outputs.append(OutputSpec("bvh", path=bvh))
    if not outputs:
        raise UsageError("no output given; add --osc HOST:PORT, --vmc HOST, --ws PORT or --bvh FILE")
    if args.duration is not None:
        duration = _number("--duration", args.duration)
        if not duration > 0:
            raise UsageError(f"--duration {args.duration!r}: expected a positive, finite number of seconds")
    else:
        duration = None

    return SessionOptions(
        mic=mic,
        input=DEMO_SPEECH if demo_sample else (Path(_text("--input", args.input)) if args.input is not None
                                               else None),
        fast=args.fast,
        loop=args.loop,
        samplerate=samplerate,
        outputs=tuple(outputs),
        checkpoint=Path(_text("--checkpoint", args.checkpoint)) if args.checkpoint is not None else None,
        engine=engine,
        motion=motion,
        vmc_rig=ports.vmc_rig,
        vmc_avatar=_vmc_avatar(args),
        ws_allow_remote=args.ws_allow_remote,
        ws_token=_ws_token(args),
        osc_control=_osc_control_address(args.osc_control, ports.osc_control_port),
        style=_text("--style", args.style),
        stats_line=args.stats or args.demo,
        stats_json=Path(_text("--stats-json", args.stats_json)) if args.stats_json is not None else None,
        duration_s=duration,
        report_dir=out_dir,
    )


def _text(flag: str, value: str) -> str:
    if not value.strip():
        raise UsageError(f"{flag} {value!r}: empty; expected a value (hop-live --help says which)")
    return value


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{flag} {text!r}: not a finite number")
    return value


def _ranged(flag: str, text: str, key: str) -> float:
    """A number within the range hop.profiles.RANGES gives ``key``."""
    low, high = RANGES[key]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise UsageError(f"{flag} {text!r}: expected a number in {low:g}..{high:g}")
    return value


def _ws_token(args) -> str | None:
    """--ws-token-file, --ws-token or HOP_LIVE_WS_TOKEN, checked; never echoed in a message."""
    from hop.bridges.ws_auth import check_token

    if args.ws_token is not None and args.ws_token_file is not None:
        raise UsageError("--ws-token and --ws-token-file: give one of them")
    token, source = _token_and_source(args)
    if token is not None:
        try:
            check_token(token)
        except ValueError as error:
            raise UsageError(f"{source} (the token is not shown): {error}") from None
    return token


def _token_and_source(args) -> tuple[str | None, str]:
    if args.ws_token_file is not None:
        path = Path(_text("--ws-token-file", args.ws_token_file))
        if path.is_dir():
            raise UsageError(f"--ws-token-file {str(path)!r} is a directory; expected a file holding the token")
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise UsageError(f"--ws-token-file {str(path)!r} does not exist; expected a file holding the "
                             "token") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise UsageError(f"--ws-token-file {str(path)!r} cannot be read as text ({reason}); expected a "
                             "file holding the token") from None
        if not token or "\n" in token:
            raise UsageError(f"--ws-token-file {str(path)!r}: expected exactly one token on one line "
                             "(the file's content is not shown)")
        return token, f"--ws-token-file {str(path)!r}"
    if args.ws_token is not None:
        if not args.ws_token:
            raise UsageError("--ws-token '': empty; expected a token (or drop the flag)")
        return args.ws_token, "--ws-token"
    return os.environ.get(TOKEN_ENV) or None, TOKEN_ENV


def _vmc_avatar(args) -> Path | None:
    """--avatar, read now (a file that is no usable humanoid ends the run here, exit 2, one line)."""
    if args.avatar is None:
        return None
    if not args.vmc:
        raise SessionError(f"--avatar {args.avatar!r} applies to --vmc (the VMC receiver's avatar); add --vmc HOST")
    from hop.bridges.avatar import AvatarError, load_avatar
    try:
        load_avatar(Path(args.avatar))
    except AvatarError as error:
        raise SessionError(f"--avatar: {error}") from None
    return Path(args.avatar)


def _osc_control_address(spec, default_port: int) -> tuple[str, int] | None:
    if spec is None:
        return None
    if spec is _DEFAULT_PORT:
        return "127.0.0.1", default_port
    return parse_host_port(spec, default_port, flag="--osc-control", ports=LISTEN_PORTS, port_only=True)


if __name__ == "__main__":
    sys.exit(main())
