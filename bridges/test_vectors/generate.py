"""Write native_osc.json: real /hop/... bundles from bridges/osc.py plus what they decode to.

    .venv/bin/python bridges/test_vectors/generate.py

Run it only when the native address space changes on purpose (then update the
Unity and Unreal receivers too); tests/bridges/test_bridges_vectors.py fails as
soon as the encoder's bytes and this file disagree.

Every vector holds:
- "frame": the PoseFrame the bundle was encoded from (floats are float32 values
  written exactly, capture_time a float64);
- "hex": the bundle as bytes;
- "messages": address, type tags and arguments, in bundle order;
- "expect": what a receiver should end up with (the fields of a parsed frame),
  with every float also as its IEEE-754 bit pattern ("dirvec_bits", ...), so
  C#/C++ parsers can be compared bit for bit without float printing rules.

"invalid" vectors are packets a parser must reject (and keep its last frame).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "native_osc.json"

# The native address space in bundle order, with each message's type tags
# (the float arrays' lengths depend on the skeleton).
ADDRESSES = ["/hop/frame", "/hop/stream", "/hop/time", "/hop/speaking", "/hop/skeleton", "/hop/dirvec", "/hop/joints"]


def f32_bits(values) -> list[str]:
    return [f"{b:08x}" for b in np.asarray(values, dtype=">f4").view(">u4").tolist()]


def f64_bits(value: float) -> str:
    return struct.pack(">d", value).hex()


def frames():
    from hop.bridges.frame import PoseFrame
    from hop.model.skeleton import TED_EXPRESSIVE, TED_GESTURE

    rng = np.random.default_rng(20250)
    mean = TED_GESTURE.mean_pose().astype(np.float32)
    raised = mean.reshape(-1, 3).copy()
    raised[4] = [0.0, -1.0, 0.0]  # left upper arm straight up (TED up is -y)
    raised[5] = [-1.0, 0.0, 0.0]  # left forearm to the subject's left (-x)
    wobble = mean.reshape(-1, 3) + rng.normal(scale=0.2, size=(9, 3))
    wobble /= np.linalg.norm(wobble, axis=1, keepdims=True)
    expressive = rng.normal(size=(TED_EXPRESSIVE.n_bones, 3))
    expressive /= np.linalg.norm(expressive, axis=1, keepdims=True)
    return {
        "gesture_mean_silent": PoseFrame(0, 1234.5678901234, mean, speaking=False),
        "gesture_left_arm_raised": PoseFrame(1, 1234.6012234567, raised.reshape(-1).astype(np.float32), speaking=True),
        "gesture_random_stream3": PoseFrame(2**31 - 1, 98765.4321, wobble.reshape(-1).astype(np.float32),
                                            speaking=True, stream=3),
        "expressive_random": PoseFrame(77, 0.015625, expressive.reshape(-1).astype(np.float32), speaking=False,
                                       stream=1, skeleton="ted_expressive"),
    }


def vector(name: str, frame) -> dict:
    from hop.bridges.osc import encode_native_bundle

    sys.path.insert(0, str(HERE.parents[1] / "tests" / "bridges"))
    from osc_decoder import decode_packet  # the independent decoder, not python-osc

    data = encode_native_bundle(frame)
    packet = decode_packet(data)
    messages = packet["elements"]
    by_address = {m["address"]: m["args"] for m in messages}
    return {
        "name": name,
        "frame": {"index": frame.index, "capture_time": frame.capture_time, "speaking": frame.speaking,
                  "stream": frame.stream, "skeleton": frame.skeleton,
                  "dir_vec": [float(v) for v in np.asarray(frame.dir_vec, dtype=np.float32)]},
        "size": len(data),
        "hex": data.hex(),
        "timetag": packet["timetag"],
        "messages": messages,
        "expect": {
            "frame": by_address["/hop/frame"][0],
            "stream": by_address["/hop/stream"][0],
            "time": by_address["/hop/time"][0],
            "time_bits": f64_bits(by_address["/hop/time"][0]),
            "speaking": by_address["/hop/speaking"][0],
            "skeleton": by_address["/hop/skeleton"][0],
            "dirvec_bits": f32_bits(by_address["/hop/dirvec"]),
            "joints_bits": f32_bits(by_address["/hop/joints"]),
        },
    }


def _rebuilt(frame, change) -> bytes:
    """The frame's bundle with its messages edited by `change` (a list of (address, types, args) -> list)."""
    from hop.bridges.osc import osc_bundle, osc_message

    sys.path.insert(0, str(HERE.parents[1] / "tests" / "bridges"))
    from osc_decoder import decode_packet

    from hop.bridges.osc import encode_native_bundle

    messages = [(m["address"], m["types"], m["args"]) for m in decode_packet(encode_native_bundle(frame))["elements"]]
    return osc_bundle(osc_message(*m) for m in change(messages))


def extra_message_vector(name: str, frame) -> dict:
    """A bundle with an address a receiver does not know, before and after the known ones: must be ignored."""
    data = _rebuilt(frame, lambda ms: [("/hop/future", "if", [7, 0.5])] + ms + [("/hop/extra", "s", ["x"])])
    out = vector(name, frame)
    out.update(hex=data.hex(), size=len(data), note="unknown addresses are skipped; the frame is the same")
    out["messages"] = None  # decode it yourself: not produced by the encoder, so no byte-for-byte check
    return out


def invalid_vectors(frame) -> list[dict]:
    """Packets a receiver must reject without crashing or changing its last frame."""
    from hop.bridges.osc import encode_native_bundle

    good = encode_native_bundle(frame)
    bad_size = bytearray(good)
    bad_size[16:20] = struct.pack(">i", len(good))  # first element claims more bytes than the packet holds
    bad_tags = bytearray(good)
    bad_tags[20 + 12] = ord(";")  # /hop/frame's type tag string must start with ','
    return [
        {"name": "truncated_last_float", "reason": "packet cut 4 bytes short", "hex": good[:-4].hex()},
        {"name": "element_size_too_large", "reason": "element size runs past the end", "hex": bytes(bad_size).hex()},
        {"name": "bad_type_tag_string", "reason": "type tags do not start with ','", "hex": bytes(bad_tags).hex()},
        {"name": "not_a_bundle", "reason": "a bare /hop/frame message, not a bundle",
         "hex": good[20:20 + struct.unpack(">i", good[16:20])[0]].hex()},
        {"name": "missing_dirvec", "reason": "no /hop/dirvec message",
         "hex": _rebuilt(frame, lambda ms: [m for m in ms if m[0] != "/hop/dirvec"]).hex()},
        {"name": "dirvec_as_ints", "reason": "/hop/dirvec with type tags 'i'",
         "hex": _rebuilt(frame, lambda ms: [(a, "i" * len(v), [int(x * 100) for x in v]) if a == "/hop/dirvec"
                                            else (a, t, v) for a, t, v in ms]).hex()},
        {"name": "joints_count_mismatch", "reason": "/hop/joints must hold 3 * (bones + 1) floats",
         "hex": _rebuilt(frame, lambda ms: [(a, t[:-3], v[:-3]) if a == "/hop/joints" else (a, t, v)
                                            for a, t, v in ms]).hex()},
        {"name": "empty", "reason": "zero bytes", "hex": ""},
    ]


def build() -> dict:
    all_frames = frames()
    vectors = [vector(name, frame) for name, frame in all_frames.items()]
    vectors.append(extra_message_vector("gesture_with_unknown_addresses", all_frames["gesture_left_arm_raised"]))
    return {
        "description": "Native /hop/... OSC bundles from bridges/osc.py (encode_native_bundle) with their decoded "
                       "contents; see bridges/test_vectors/generate.py and bridges/README.md.",
        "addresses": ADDRESSES,
        "vectors": vectors,
        "invalid": invalid_vectors(all_frames["gesture_left_arm_raised"]),
    }


if __name__ == "__main__":
    OUTPUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUTPUT}")
