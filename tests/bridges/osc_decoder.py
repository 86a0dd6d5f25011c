"""An OSC 1.0 decoder written from the specification, independent of python-osc.

Used two ways by the bridge tests:
- imported, to decode test vectors;
- run as a program (`python osc_decoder.py`), as a UDP receiver in its own
  process: it prints {"port": N} once, then one JSON line per datagram:
  {"received": perf_counter(), "size": bytes, "packet": decoded} or {"error": ...}.

Decoded forms: a message is {"address", "types", "args"}; a bundle is
{"bundle": true, "timetag": int, "elements": [...]}. Padding and sizes are
checked strictly, since sloppy packets are exactly what receivers choke on.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time


class OscDecodeError(ValueError):
    pass


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise OscDecodeError(f"unterminated string at byte {pos}")
    padded_end = (end + 4) & ~3  # at least one NUL, total a multiple of 4
    if padded_end > len(data) or any(data[end:padded_end]):
        raise OscDecodeError(f"string at byte {pos} is not NUL-padded to a multiple of 4")
    return data[pos:end].decode("ascii"), padded_end


def _take(data: bytes, pos: int, size: int) -> bytes:
    if pos + size > len(data):
        raise OscDecodeError(f"need {size} bytes at {pos}, packet has {len(data)}")
    return data[pos:pos + size]


def decode_message(data: bytes) -> dict:
    address, pos = _read_string(data, 0)
    if not address.startswith("/"):
        raise OscDecodeError(f"address {address!r} does not start with '/'")
    if pos == len(data):  # OSC 1.0 allows a missing type tag string; treat as no arguments
        return {"address": address, "types": "", "args": []}
    tags, pos = _read_string(data, pos)
    if not tags.startswith(","):
        raise OscDecodeError(f"type tag string {tags!r} does not start with ','")
    args: list = []
    for tag in tags[1:]:
        if tag == "i":
            args.append(struct.unpack(">i", _take(data, pos, 4))[0])
            pos += 4
        elif tag == "f":
            args.append(struct.unpack(">f", _take(data, pos, 4))[0])
            pos += 4
        elif tag == "h":
            args.append(struct.unpack(">q", _take(data, pos, 8))[0])
            pos += 8
        elif tag == "d":
            args.append(struct.unpack(">d", _take(data, pos, 8))[0])
            pos += 8
        elif tag in "sS":
            value, pos = _read_string(data, pos)
            args.append(value)
        elif tag == "b":
            size = struct.unpack(">i", _take(data, pos, 4))[0]
            blob = _take(data, pos + 4, size)
            args.append(blob.hex())
            pos = pos + 4 + ((size + 3) & ~3)
        elif tag in "TFNI":
            args.append({"T": True, "F": False, "N": None, "I": "inf"}[tag])
        else:
            raise OscDecodeError(f"unsupported type tag {tag!r}")
    if pos != len(data):
        raise OscDecodeError(f"{len(data) - pos} bytes left after the arguments of {address}")
    return {"address": address, "types": tags[1:], "args": args}


def decode_packet(data: bytes) -> dict:
    if len(data) % 4:
        raise OscDecodeError(f"packet size {len(data)} is not a multiple of 4")
    if not data.startswith(b"#bundle\0"):
        return decode_message(data)
    timetag = struct.unpack(">Q", _take(data, 8, 8))[0]
    elements, pos = [], 16
    while pos < len(data):
        size = struct.unpack(">i", _take(data, pos, 4))[0]
        if size <= 0 or size % 4:
            raise OscDecodeError(f"bundle element size {size} at byte {pos} is not a positive multiple of 4")
        elements.append(decode_packet(_take(data, pos + 4, size)))
        pos += 4 + size
    return {"bundle": True, "timetag": timetag, "elements": elements}


def serve() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(("127.0.0.1", 0))
    print(json.dumps({"port": receiver.getsockname()[1]}), flush=True)
    while True:
        data = receiver.recv(65536)
        received = time.perf_counter()
        try:
            line = {"received": received, "size": len(data), "packet": decode_packet(data)}
        except (OscDecodeError, UnicodeDecodeError, struct.error) as error:
            line = {"received": received, "error": str(error), "hex": data.hex()}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
