"""hop-live: speech in (microphone or file), pose frames out (OSC, VMC, WebSocket, BVH).

    hop-live --mic default --osc 127.0.0.1:9000
    hop-live --input talk.wav --vmc 127.0.0.1 --ws 8765 --stats
    hop-live --input talk.wav --fast --bvh talk.bvh          # offline conversion
    hop-live --demo                                           # built-in sample, no mic needed
    hop-live --demo --mic default                             # the same outputs, live from the microphone

Ctrl-C, SIGTERM and SIGHUP stop cleanly: outputs are closed, a BVH is finished.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from hop.engine.session import (DEMO_SPEECH, OutputSpec, SessionError, SessionOptions, parse_host_port,
                                run_session)
from hop.profiles import DEFAULT_PROFILE, LM_WEIGHTS, ProfileError, available_profiles, load_profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hop-live", description="Real-time co-speech gestures from speech.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--mic", metavar="NAME|INDEX", help="capture from a microphone ('default' = the system's)")
    src.add_argument("--input", metavar="FILE", type=Path, help="play a WAV file at real-time pace, exit at its end")
    src.add_argument("--demo", action="store_true",
                     help="local OSC/WebSocket, BVH, GIF and latency plot in --out; input: the built-in speech "
                          "sample unless --mic or --input is given")
    src.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p.add_argument("--fast", action="store_true", help="with --input: as fast as possible (offline conversion)")
    p.add_argument("--loop", action="store_true", help="with --input: start over at the end (until stopped)")
    p.add_argument("--samplerate", type=float, help="microphone sample rate (default: the device's)")

    out = p.add_argument_group("outputs (any number)")
    out.add_argument("--osc", action="append", default=[], metavar="HOST:PORT",
                     help="native /hop/... OSC stream (see bridges/README.md)")
    out.add_argument("--vmc", action="append", default=[], metavar="HOST[:PORT]",
                     help="VMC protocol (EVMC4U, VMC4UE, VSeeFace, VMC4B); default port 39539")
    out.add_argument("--avatar", metavar="FILE",
                     help="with --vmc: the receiver's avatar (.vrm VRM 0.x/1.0, or .glb with a humanoid); bone "
                          "positions sent are then its own rest offsets (see bridges/README.md)")
    out.add_argument("--ws", action="append", default=[], metavar="[HOST:]PORT",
                     help="WebSocket stream + browser viewer (loopback unless --ws-allow-remote)")
    out.add_argument("--ws-allow-remote", action="store_true", help="allow binding --ws to a non-loopback address")
    out.add_argument("--ws-token", help="token WebSocket clients must send (required with --ws-allow-remote)")
    out.add_argument("--bvh", type=Path, metavar="FILE", help="record a BVH file")
    out.add_argument("--osc-control", nargs="?", const="", metavar="[HOST:]PORT",
                     help="OSC control input /hop/control/intensity|mute|style (loopback; profile port 9001)")

    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", type=Path, help="a checkpoint from hop-train (default: the built-in one)")
    model.add_argument("--profile", default=DEFAULT_PROFILE,
                       help=f"preset name or .toml path (built-in: {', '.join(available_profiles())})")
    model.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (profile default: cpu)")
    model.add_argument("--backend", choices=("eager", "compile", "tensorrt"), help="how the model step runs")
    model.add_argument("--lm-weights", choices=LM_WEIGHTS,
                       help="the frozen LM's weights (profile default fp32; int8: quickest, eager CPU only)")
    model.add_argument("--style", default="neutral",
                       help="neutral | sample[:SEED] | speaker:N | comma-separated style vector")
    model.add_argument("--intensity", type=float, help="gesture size: 0 rest .. 1 as generated .. 3")
    model.add_argument("--no-asr", action="store_true", help="no speech recognition: audio alone drives semantics")
    model.add_argument("--audio-delay", type=float, metavar="SECONDS",
                       help="hold poses back this long to match audio the audience hears late")

    run = p.add_argument_group("running")
    run.add_argument("--stats", action="store_true", help="live status line on the terminal")
    run.add_argument("--stats-json", type=Path, metavar="FILE", help="write the status figures as JSON (updated live)")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--out", type=Path, default=Path("out"), help="--demo: folder for its files (default ./out)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        from hop.engine.capture import format_device_list
        print(format_device_list())
        return 0
    try:
        options = options_from_args(args)
    except (ProfileError, SessionError, ValueError) as error:
        print(f"hop-live: {error}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        print(f"\nhop-live: {signal.Signals(signum).name}, stopping", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        report = run_session(options, stop)
    except SessionError as error:
        print(f"hop-live: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report["summary"], indent=2))
    return 0


def options_from_args(args) -> SessionOptions:
    profile = load_profile(args.profile)
    # --demo picks the outputs (local OSC + WebSocket, BVH, GIF, latency plot) and, when no
    # --mic or --input is given, the built-in speech sample as the input.
    sources = [name for name, given in (("--mic", args.mic), ("--input", args.input)) if given]
    if len(sources) > 1:
        raise SessionError(f"choose one input, not {' and '.join(sources)}")
    demo_sample = args.demo and not sources
    if (args.fast or args.loop) and not (args.input or demo_sample):
        raise SessionError("--fast and --loop apply to --input files")
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
        engine = replace(engine, audio_delay_s=args.audio_delay)
    motion = profile.motion if args.intensity is None else replace(profile.motion, intensity=args.intensity)
    ports = profile.outputs

    outputs = [OutputSpec("osc", *parse_host_port(spec, None)) for spec in args.osc]
    outputs += [OutputSpec("vmc", *parse_host_port(spec, ports.vmc_port)) for spec in args.vmc]
    for spec in args.ws:
        host, port = ("127.0.0.1", int(spec)) if spec.isdigit() else parse_host_port(spec, ports.ws_port)
        outputs.append(OutputSpec("ws", host, port))
    out_dir = None
    if args.demo:
        out_dir = args.out
        if not args.osc:
            outputs.append(OutputSpec("osc", "127.0.0.1", ports.osc_port))
        if not args.ws:
            outputs.append(OutputSpec("ws", "127.0.0.1", ports.ws_port))
        bvh = args.bvh or out_dir / "demo.bvh"
    else:
        bvh = args.bvh
    if bvh is not None:
        outputs.append(OutputSpec("bvh", path=Path(bvh)))
    if not outputs:
        raise SessionError("no output given; add --osc HOST:PORT, --vmc HOST, --ws PORT or --bvh FILE")

    return SessionOptions(
        mic=args.mic if args.mic is not None else None,
        input=DEMO_SPEECH if demo_sample else args.input,
        fast=args.fast,
        loop=args.loop,
        samplerate=args.samplerate,
        outputs=tuple(outputs),
        checkpoint=args.checkpoint,
        engine=engine,
        motion=motion,
        vmc_rig=ports.vmc_rig,
        vmc_avatar=_vmc_avatar(args),
        ws_allow_remote=args.ws_allow_remote,
        ws_token=args.ws_token or os.environ.get("HOP_LIVE_WS_TOKEN"),
        osc_control=_osc_control_address(args.osc_control, ports.osc_control_port),
        style=args.style,
        stats_line=args.stats or args.demo,
        stats_json=args.stats_json,
        duration_s=args.duration,
        report_dir=out_dir,
    )


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


def _osc_control_address(spec: str | None, default_port: int) -> tuple[str, int] | None:
    if spec is None:
        return None
    if not spec:
        return "127.0.0.1", default_port
    return ("127.0.0.1", int(spec)) if spec.isdigit() else parse_host_port(spec, default_port)


if __name__ == "__main__":
    sys.exit(main())
