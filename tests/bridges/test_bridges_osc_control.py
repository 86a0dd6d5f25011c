"""The OSC control input: valid messages over real UDP reach the handler, everything else is
rejected and counted, and 10,000+ random and mutated datagrams are judged exactly as a
reference built on the independent OSC decoder (tests/bridges/osc_decoder.py) judges them.
"""

from __future__ import annotations

import math
import random
import socket
import struct
import time

import pytest

from hop.bridges.control import Control
from hop.bridges.osc_wire import osc_message
from hop.bridges.osc_control import OscControlOptions, OscControlServer, parse_osc_control

from osc_decoder import OscDecodeError, decode_packet

STYLES = ("calm", "lively", "host_2")
MAX_BYTES = 256


def reference(datagram: bytes) -> dict | None:
    """The field a valid datagram sets, or None when it must be rejected (from the module's docstring)."""
    if len(datagram) > MAX_BYTES:
        return None
    try:
        packet = decode_packet(datagram)
    except (OscDecodeError, UnicodeDecodeError, struct.error):
        return None
    if packet.get("bundle") or len(packet["types"]) != 1:
        return None
    tag, value = packet["types"], packet["args"][0]
    if packet["address"] == "/hop/control/intensity":
        if tag in "if" and not math.isnan(value) and 0 <= value <= 3:
            return {"intensity": float(value)}
    elif packet["address"] == "/hop/control/mute":
        if tag in "TF":
            return {"mute": value}
        if tag in "if" and value in (0, 1):
            return {"mute": bool(value)}
    elif packet["address"] == "/hop/control/style":
        if tag == "s" and value in STYLES:
            return {"style": value}
    return None


def as_fields(control: Control) -> dict:
    return {k: v for k, v in (("style", control.style), ("intensity", control.intensity),
                              ("mute", control.mute)) if v is not None}


class Received:
    def __init__(self):
        self.controls: list[Control] = []

    def __call__(self, control: Control) -> None:
        self.controls.append(control)


def _server(rate_hz: float = 20.0) -> tuple[OscControlServer, Received]:
    received = Received()
    server = OscControlServer(OscControlOptions(port=0, max_bytes=MAX_BYTES, rate_hz=rate_hz), received, STYLES)
    return server, received


def _settle(server: OscControlServer, total: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = server.stats()
        if stats["accepted"] + stats["rejected"] >= total or time.monotonic() > deadline:
            return stats
        time.sleep(0.005)


def test_valid_messages_over_udp_reach_the_handler_and_bad_ones_are_counted():
    server, received = _server()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    good = [("/hop/control/intensity", "f", [0.5]), ("/hop/control/intensity", "i", [2]),
            ("/hop/control/mute", "T", [True]), ("/hop/control/mute", "f", [0.0]),
            ("/hop/control/style", "s", ["lively"])]
    bad = {
        "bad_address": osc_message("/hop/control/volume", "f", [0.5]).dgram,
        "bad_value": osc_message("/hop/control/intensity", "f", [3.5]).dgram,
        "bad_args": osc_message("/hop/control/intensity", "ff", [0.5, 0.5]).dgram,
        "bad_osc": osc_message("/hop/control/intensity", "f", [0.5]).dgram + b"\0\0\0\0",
        "bundle": b"#bundle\0" + bytes(8) + struct.pack(">i", 24) + osc_message("/hop/control/mute", "T", [True]).dgram,
        "too_large": osc_message("/hop/control/style", "s", ["x" * 300]).dgram,
    }
    try:
        for address, types, values in good:
            sender.sendto(osc_message(address, types, values).dgram, ("127.0.0.1", server.port))
        for datagram in bad.values():
            sender.sendto(datagram, ("127.0.0.1", server.port))
        stats = _settle(server, len(good) + len(bad))
    finally:
        sender.close()
        server.close()
    assert [as_fields(c) for c in received.controls] == [
        {"intensity": 0.5}, {"intensity": 2.0}, {"mute": True}, {"mute": False}, {"style": "lively"}]
    assert stats["accepted"] == len(good) and stats["rejected"] == len(bad)
    assert stats["rejected_by_reason"] == {code: 1 for code in bad}
    assert stats["last_error"].startswith("too_large")


def test_a_flood_is_rate_limited_per_sender():
    server, received = _server(rate_hz=10.0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagram = osc_message("/hop/control/intensity", "f", [1.0]).dgram
    try:
        for _ in range(200):
            sender.sendto(datagram, ("127.0.0.1", server.port))
        stats = _settle(server, 200)
    finally:
        sender.close()
        server.close()
    # A burst of at most rate_hz gets through (plus what the bucket refills while 200 arrive).
    assert 10 <= stats["accepted"] <= 15, stats
    assert stats["rejected_by_reason"] == {"rate_limited": 200 - stats["accepted"]}
    assert len(received.controls) == stats["accepted"]


def test_one_flooding_sender_does_not_use_up_another_senders_allowance():
    """The allowance is per sending socket (host and port): every local process shares 127.0.0.1,
    and one flooding it must not crowd out a controller that sends a few messages."""
    server, received = _server(rate_hz=10.0)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    controller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood = osc_message("/hop/control/intensity", "f", [2.0]).dgram
    try:
        for i in range(600):
            flooder.sendto(flood, ("127.0.0.1", server.port))
            if i % 100 == 50:
                controller.sendto(osc_message("/hop/control/mute", "T", [True]).dgram, ("127.0.0.1", server.port))
            if i % 25 == 24:
                time.sleep(0.005)  # keep within the socket's buffer: this tests the allowance, not the kernel
        stats = _settle(server, 606)
    finally:
        flooder.close()
        controller.close()
        server.close()
    assert stats["accepted"] + stats["rejected"] == 606, stats
    mutes = [c for c in received.controls if c.mute is not None]
    assert len(mutes) == 6, f"the controller's messages were crowded out: {stats}"
    assert stats["rejected_by_reason"]["rate_limited"] >= 600 - 20, stats


def test_a_control_the_receiver_cannot_apply_is_rejected_with_its_reason():
    from hop.bridges.control import ControlError

    def receiver(control):
        raise ControlError("bad_value", f"style {control.style!r}: this model has no such style")

    server = OscControlServer(OscControlOptions(port=0), receiver)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(osc_message("/hop/control/style", "s", ["garbage"]).dgram, ("127.0.0.1", server.port))
        stats = _settle(server, 1)
    finally:
        sender.close()
        server.close()
    assert stats["accepted"] == 0 and stats["rejected_by_reason"] == {"bad_value": 1}, stats
    assert "no such style" in stats["last_error"]


def test_only_loopback_and_a_busy_port_is_a_clear_error():
    with pytest.raises(ValueError, match="loopback only"):
        OscControlServer(OscControlOptions(host="0.0.0.0", port=0), lambda c: None)
    for port in (70000, -1):  # a port that is no port: a message, not OverflowError from the socket
        with pytest.raises(ValueError, match=r"expected PORT in 0\.\.65535 \(0: any free port\)"):
            OscControlServer(OscControlOptions(port=port), lambda c: None)
    server, _ = _server()
    try:
        with pytest.raises(OSError, match="pick another port"):
            OscControlServer(OscControlOptions(port=server.port), lambda c: None)
    finally:
        server.close()


def test_a_handler_that_raises_does_not_stop_the_server():
    calls = []

    def handler(control):
        calls.append(control)
        raise RuntimeError("engine busy")

    server = OscControlServer(OscControlOptions(port=0), handler)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for value in (0.1, 0.2):
            sender.sendto(osc_message("/hop/control/intensity", "f", [value]).dgram, ("127.0.0.1", server.port))
        stats = _settle(server, 2)
    finally:
        sender.close()
        server.close()
    # it could not take them: counted as rejected ("internal"), and the server goes on
    assert len(calls) == 2 and stats["rejected_by_reason"] == {"internal": 2} and "engine busy" in stats["last_error"]


# -- fuzz ---------------------------------------------------------------------------------

ADDRESSES = ["/hop/control/intensity", "/hop/control/mute", "/hop/control/style", "/hop/control",
             "/hop/control/intensity/x", "/HOP/control/mute", "/hop/frame", "/", "/hop/control/style\x01"]
VALUES = {"i": [0, 1, 2, 3, -1, 2**31 - 1, -2**31], "f": [0.0, -0.0, 0.5, 1.0, 2.0, 2.0000002, -0.1, math.nan,
                                                          math.inf, 1e30],
          "s": list(STYLES) + ["", "speaker_3", "calm ", "x" * 40, "ünï", "a\x7f"], "T": [True], "F": [False],
          "d": [0.5], "h": [1]}


PLAUSIBLE = {"/hop/control/intensity": "if", "/hop/control/mute": "TFif", "/hop/control/style": "s"}


def random_message(rng: random.Random) -> bytes:
    if rng.random() < 0.5:  # the right address with a tag it takes: the value decides
        address = rng.choice(list(PLAUSIBLE))
        types = rng.choice(PLAUSIBLE[address])
    else:
        address = rng.choice(ADDRESSES[:3]) if rng.random() < 0.7 else rng.choice(ADDRESSES)
        types = "".join(rng.choice("ifsTFdh") for _ in range(rng.choice([1, 1, 1, 1, 0, 2, 3])))
    values = [rng.choice(VALUES[t]) for t in types]
    try:
        return osc_message(address, types, values).dgram
    except Exception:  # what python-osc's builder refuses to write, written by hand
        return address.encode("utf-8", "replace") + b"\0" * (4 - len(address) % 4)


def mutate(datagram: bytes, rng: random.Random) -> bytes:
    data = bytearray(datagram)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(6)
        if kind == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1 and data:
            del data[rng.randrange(len(data)):][:rng.randint(1, 8)]
        elif kind == 2:
            data[rng.randrange(len(data) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 3 and data:
            data = data[:rng.randrange(len(data))]
        elif kind == 4:
            data += b"\0" * rng.choice([1, 4, 8])
        else:
            data = bytearray(b"#bundle\0") + bytes(8) + struct.pack(">i", len(data)) + data
    return bytes(data)


def fuzz_datagrams(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.45:
            out.append(random_message(rng))
        elif roll < 0.9:
            out.append(mutate(random_message(rng), rng))
        else:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))
    return out


def test_fuzz_parser_agrees_with_the_reference():
    datagrams = fuzz_datagrams(20000, seed=1)
    valid = 0
    for datagram in datagrams:
        expected = reference(datagram)
        if len(datagram) > MAX_BYTES:
            continue  # the size limit is the server's, tested below
        try:
            got = as_fields(parse_osc_control(datagram, STYLES))
        except ValueError:
            got = None
        assert got == expected, datagram
        valid += expected is not None
    assert valid > 2000, "the fuzz corpus should hold plenty of valid messages too"


def test_fuzz_through_the_socket_changes_state_only_when_valid():
    datagrams = fuzz_datagrams(10000, seed=2)
    expected = [fields for fields in map(reference, datagrams) if fields is not None]
    server, received = _server(rate_hz=1e9)  # rate limiting has its own test
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for start in range(0, len(datagrams), 50):  # paced, so the kernel's buffer never drops one
            for datagram in datagrams[start:start + 50]:
                sender.sendto(datagram, ("127.0.0.1", server.port))
            _settle(server, min(start + 50, len(datagrams)))
        stats = server.stats()
    finally:
        sender.close()
        server.close()
    assert stats["accepted"] + stats["rejected"] == len(datagrams), "the server lost datagrams or crashed"
    assert [as_fields(c) for c in received.controls] == expected
    assert stats["accepted"] == len(expected) and stats["rejected"] == len(datagrams) - len(expected)
