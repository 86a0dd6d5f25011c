"""The native OSC test vectors (bridges/test_vectors/native_osc.json) against the encoder and the receivers.

- The current encoder must still produce every vector byte for byte.
- The independent decoder (osc_decoder.py, not python-osc) must read them back
  as the stored messages, and the stored expectations must agree with the frame.
- The Unity (C#) and Unreal (C++) receivers must name exactly the vectors'
  addresses, and their parsers, compiled here with mcs/mono and g++ when those
  are installed, must turn every valid vector into the expected frame (bit for
  bit) and reject every invalid one.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osc_decoder import OscDecodeError, decode_packet

from hop.bridges.frame import PoseFrame
from hop.bridges.osc import encode_native_bundle
from hop.model.skeleton import get_skeleton

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "bridges" / "test_vectors" / "native_osc.json").read_text())
ADDRESSES = VECTORS["addresses"]
UNITY = ROOT / "bridges" / "unity"
UNREAL = ROOT / "bridges" / "unreal"
PARSER_HEADER = UNREAL / "HopLive" / "Source" / "HopLive" / "Public" / "HopOscParser.h"
ENCODED = [v for v in VECTORS["vectors"] if v["messages"] is not None]


def frame_of(vector: dict) -> PoseFrame:
    f = vector["frame"]
    return PoseFrame(f["index"], f["capture_time"], np.array(f["dir_vec"], dtype=np.float32), f["speaking"],
                     f["stream"], f["skeleton"])


def f32_bits(values) -> list[str]:
    return [f"{b:08x}" for b in np.asarray(values, dtype=">f4").view(">u4").tolist()]


def reference_receiver(data: bytes) -> dict:
    """The receiver rules of bridges/README.md, over the independent decoder; raises on a packet to reject."""
    packet = decode_packet(data)
    if not packet.get("bundle"):
        raise OscDecodeError("not a bundle")
    known = {"/hop/frame": "i", "/hop/stream": "i", "/hop/time": "d", "/hop/speaking": "i", "/hop/skeleton": "s"}
    got = {}
    for m in packet["elements"]:
        if m.get("bundle") or m["address"] not in ADDRESSES:
            continue
        want = known.get(m["address"])
        if (want is not None and m["types"] != want) or (want is None and set(m["types"]) - {"f"}):
            raise OscDecodeError(f"{m['address']} has type tags {m['types']!r}")
        got[m["address"]] = m["args"]
    if set(got) != set(ADDRESSES):
        raise OscDecodeError(f"incomplete frame, missing {sorted(set(ADDRESSES) - set(got))}")
    dirvec, joints = got["/hop/dirvec"], got["/hop/joints"]
    if not dirvec or len(dirvec) % 3 or len(joints) != len(dirvec) + 3:
        raise OscDecodeError("dirvec/joints sizes")
    return {"frame": got["/hop/frame"][0], "stream": got["/hop/stream"][0], "time": got["/hop/time"][0],
            "time_bits": struct.pack(">d", got["/hop/time"][0]).hex(), "speaking": got["/hop/speaking"][0],
            "skeleton": got["/hop/skeleton"][0], "dirvec_bits": f32_bits(dirvec), "joints_bits": f32_bits(joints)}


def test_bridges_vectors_cover_both_skeletons_and_edge_values():
    skeletons = {v["frame"]["skeleton"] for v in ENCODED}
    assert skeletons == {"ted_gesture", "ted_expressive"}
    assert any(v["frame"]["index"] == 2**31 - 1 for v in ENCODED)  # largest int32 frame number
    assert {v["frame"]["speaking"] for v in ENCODED} == {True, False}
    assert len(VECTORS["invalid"]) >= 6


@pytest.mark.parametrize("vector", ENCODED, ids=lambda v: v["name"])
def test_bridges_vectors_current_encoder_is_byte_identical(vector):
    data = encode_native_bundle(frame_of(vector))
    assert len(data) == vector["size"]
    assert data.hex() == vector["hex"], "the native OSC encoding changed: regenerate the vectors " \
        "(bridges/test_vectors/generate.py) and update the Unity/Unreal receivers and bridges/README.md"


@pytest.mark.parametrize("vector", ENCODED, ids=lambda v: v["name"])
def test_bridges_vectors_decode_independently_to_the_stored_messages(vector):
    data = bytes.fromhex(vector["hex"])
    packet = decode_packet(data)
    assert packet["bundle"] and packet["timetag"] == vector["timetag"] == 1
    assert packet["elements"] == vector["messages"]
    assert [m["address"] for m in packet["elements"]] == ADDRESSES
    skeleton = get_skeleton(vector["frame"]["skeleton"])
    types = [m["types"] for m in packet["elements"]]
    assert types == ["i", "i", "d", "i", "s", "f" * 3 * skeleton.n_bones, "f" * 3 * skeleton.n_joints]
    frame = frame_of(vector)
    expect = vector["expect"]
    assert expect == reference_receiver(data)
    assert (expect["frame"], expect["stream"], expect["speaking"]) == (frame.index, frame.stream, int(frame.speaking))
    assert expect["time"] == frame.capture_time and expect["skeleton"] == skeleton.name
    assert expect["dirvec_bits"] == f32_bits(frame.dir_vec)
    joints = np.array(packet["elements"][6]["args"]).reshape(-1, 3)
    np.testing.assert_allclose(joints, skeleton.dir_vec_to_joints(frame.dir_vec), atol=1e-6)


def test_bridges_vectors_receiver_rules_accept_valid_and_reject_invalid():
    for vector in VECTORS["vectors"]:
        assert reference_receiver(bytes.fromhex(vector["hex"])) == vector["expect"], vector["name"]
    for bad in VECTORS["invalid"]:
        with pytest.raises((OscDecodeError, UnicodeDecodeError, struct.error)):
            reference_receiver(bytes.fromhex(bad["hex"]))


def hop_addresses_in(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        found |= set(re.findall(r'"(/hop/[A-Za-z0-9_/]*)"', path.read_text()))
    return found


def receiver_sources() -> dict[str, list[Path]]:
    return {"unity": sorted(UNITY.glob("*.cs")),
            "unreal": sorted(p for p in UNREAL.rglob("*") if p.suffix in {".h", ".cpp"})}


@pytest.mark.parametrize("engine", ["unity", "unreal"])
def test_bridges_vectors_receivers_name_exactly_the_vector_addresses(engine):
    sources = receiver_sources()[engine]
    assert sources, f"no {engine} receiver sources"
    assert hop_addresses_in(sources) == set(ADDRESSES)


# ------------------------------------------------------------ the parsers themselves

HARNESS_INPUT = "".join(f"{v['name']} {v['hex'] or '-'}\n" for v in VECTORS["vectors"] + VECTORS["invalid"])

CSHARP_HARNESS = r"""
using System;
using System.Linq;
using HopLive;
static class Harness {
    static byte[] Hex(string s) {
        if (s == "-") return new byte[0];
        var b = new byte[s.Length / 2];
        for (int i = 0; i < b.Length; i++) b[i] = Convert.ToByte(s.Substring(2 * i, 2), 16);
        return b;
    }
    static string Bits(float[] v) { return string.Join(",", v.Select(x => ((uint)HopOscParser.FloatToIntBits(x)).ToString("x8"))); }
    static void Main() {
        string line;
        while ((line = Console.ReadLine()) != null) {
            var parts = line.Split(' ');
            var data = Hex(parts[1]);
            string error;
            var f = HopOscParser.Parse(data, data.Length, out error);
            if (f == null) { Console.WriteLine(parts[0] + " reject " + error); continue; }
            Console.WriteLine(parts[0] + " ok " + f.Frame + " " + f.Stream + " "
                + ((ulong)BitConverter.DoubleToInt64Bits(f.Time)).ToString("x16") + " " + (f.Speaking ? 1 : 0) + " "
                + f.Skeleton + " " + Bits(f.DirVec) + " " + Bits(f.Joints));
        }
    }
}
"""

CPP_HARNESS = r"""
#include "HopOscParser.h"
#include <cinttypes>
#include <cstdio>
#include <iostream>
#include <sstream>
static void Bits(const std::vector<float>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
        uint32_t b; std::memcpy(&b, &v[i], 4);
        std::printf("%s%08" PRIx32, i ? "," : "", b);
    }
}
int main() {
    std::string name, hex;
    while (std::cin >> name >> hex) {
        std::vector<uint8_t> data;
        if (hex != "-") for (size_t i = 0; i + 1 < hex.size(); i += 2) data.push_back(uint8_t(std::stoul(hex.substr(i, 2), nullptr, 16)));
        HopOsc::FFrame f;
        const char* error = nullptr;
        if (!HopOsc::ParseBundle(data.data(), data.size(), f, &error)) { std::printf("%s reject %s\n", name.c_str(), error); continue; }
        uint64_t t; std::memcpy(&t, &f.Time, 8);
        std::printf("%s ok %d %d %016" PRIx64 " %d %s ", name.c_str(), f.Frame, f.Stream, t, f.bSpeaking ? 1 : 0, f.Skeleton.c_str());
        Bits(f.DirVec); std::printf(" "); Bits(f.Joints); std::printf("\n");
    }
}
"""


def check_parser_output(output: str) -> None:
    lines = {line.split(" ", 1)[0]: line.split(" ")[1:] for line in output.strip().splitlines()}
    assert set(lines) == {v["name"] for v in VECTORS["vectors"] + VECTORS["invalid"]}
    for vector in VECTORS["vectors"]:
        e = vector["expect"]
        want = ["ok", str(e["frame"]), str(e["stream"]), e["time_bits"], str(e["speaking"]), e["skeleton"],
                ",".join(e["dirvec_bits"]), ",".join(e["joints_bits"])]
        assert lines[vector["name"]] == want, vector["name"]
    for bad in VECTORS["invalid"]:
        assert lines[bad["name"]][0] == "reject", f"{bad['name']} ({bad['reason']}) was accepted"


@pytest.mark.skipif(not (shutil.which("mcs") and shutil.which("mono")), reason="Mono (mcs, mono) not installed")
def test_bridges_vectors_csharp_parser_matches_vectors(tmp_path):
    (tmp_path / "Harness.cs").write_text(CSHARP_HARNESS)
    exe = tmp_path / "harness.exe"
    subprocess.run(["mcs", "-nologo", "-warnaserror", f"-out:{exe}", str(UNITY / "HopOscParser.cs"),
                    str(tmp_path / "Harness.cs")], check=True, capture_output=True, timeout=60)
    result = subprocess.run(["mono", str(exe)], input=HARNESS_INPUT, capture_output=True, text=True, timeout=30,
                            check=True)
    check_parser_output(result.stdout)


@pytest.mark.skipif(not shutil.which("g++"), reason="g++ not installed")
def test_bridges_vectors_cpp_parser_matches_vectors(tmp_path):
    (tmp_path / "harness.cpp").write_text(CPP_HARNESS)
    exe = tmp_path / "harness"
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                    f"-I{PARSER_HEADER.parent}", str(tmp_path / "harness.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    result = subprocess.run([str(exe)], input=HARNESS_INPUT, capture_output=True, text=True, timeout=30, check=True)
    check_parser_output(result.stdout)


# ------------------------------------------------------------ the receivers' drive tables

UNITY_ORDER = ["Spine", "Neck", "Head", "LeftShoulder", "LeftUpperArm", "LeftLowerArm", "RightShoulder",
               "RightUpperArm", "RightLowerArm"]
UE_ORDER = ["spine_01", "neck_01", "head", "clavicle_l", "upperarm_l", "lowerarm_l", "clavicle_r", "upperarm_r",
            "lowerarm_r"]


def rig_drives(rig_name: str, skeleton: str) -> dict[str, tuple[int, np.ndarray]]:
    from hop.bridges.retarget import load_rig

    rig = load_rig(rig_name)
    return {rig.bones[d.bone].name: (d.source, d.rest_direction) for d in rig.drives_for(skeleton)}


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def test_bridges_vectors_unity_drive_table_matches_the_rig_profile():
    """Which /hop/dirvec bone turns which avatar bone, and the fixed neck/head rest directions, as in unity_humanoid.toml."""
    source = (UNITY / "HopOscReceiver.cs").read_text()
    tables = dict(re.findall(r"(TedGesture|TedExpressive) = Table\(([^;]*)\);", source))
    assert set(tables) == {"TedGesture", "TedExpressive"}
    fixed = dict(re.findall(r"HumanBodyBones\.(\w+), \w+, -?\d+, NoBone, new Vector3\(([^)]*)\)", source))
    assert set(fixed) == {"Neck"}  # the head's rest direction is the tables' last argument
    for name, skeleton in (("TedGesture", "ted_gesture"), ("TedExpressive", "ted_expressive")):
        drives = rig_drives("unity_humanoid", skeleton)
        numbers = [float(x.rstrip("f")) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?f?", tables[name])]
        assert [int(x) for x in numbers[:9]] == [drives[bone][0] for bone in UNITY_ORDER], name
        np.testing.assert_allclose(unit(numbers[9:12]), drives["Head"][1], atol=2e-3)
        vector = [float(x.rstrip("f")) for x in fixed["Neck"].split(",")]
        np.testing.assert_allclose(unit(vector), drives["Neck"][1], atol=2e-3)


def test_bridges_vectors_unreal_drive_table_matches_the_rig_profiles():
    source = (UNREAL / "HopLive" / "Source" / "HopLive" / "Private" / "HopOscReceiverComponent.cpp").read_text()
    arrays = dict(re.findall(r"(TedGesture|TedExpressive)Sources\[9\] = \{([^}]*)\}", source))
    # The skeleton's bone indices are the same whatever the rig: ue5_mannequin has gesture drives only.
    gesture = rig_drives("ue5_mannequin", "ted_gesture")
    assert [int(x) for x in arrays["TedGesture"].split(",")] == [gesture[bone][0] for bone in UE_ORDER]
    expressive = rig_drives("unity_humanoid", "ted_expressive")
    assert [int(x) for x in arrays["TedExpressive"].split(",")] == [expressive[bone][0] for bone in UNITY_ORDER]
    fixed = re.findall(r"\{(\w+), NAME_None, FVector\(([^)]*)\)", source)
    assert [name for name, _ in fixed] == ["Neck", "Head"]
    for (_, vector), bone in zip(fixed, ["neck_01", "head"]):
        np.testing.assert_allclose(unit([float(x) for x in vector.split(",")]), gesture[bone][1], atol=2e-3)
