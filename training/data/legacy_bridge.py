"""Pickle-free transport of nested Python/numpy records between two interpreters.

This file runs in two places: inside hop-live, and as a stand-alone script in the
isolated pyarrow-11 environment that ``ted_legacy`` creates (which has numpy 1.x and
no hop-live). So it imports nothing but numpy and the standard library.

Encoding: one .npz whose ``__structure__`` entry is the record as JSON, with every
numpy array replaced by ``{"__ndarray__": name}`` and stored beside it under that
name. Both numpy 1.x and 2.x read it with ``allow_pickle=False``.

As a script it is the legacy reader: it reads frames (8-byte little-endian length +
bytes) of ``pyarrow.serialize`` output from stdin and answers each with a frame of
the encoded record on stdout; a zero-length frame ends it.
"""

import io
import json
import struct
import sys

import numpy as np

_ARRAY_TAG = "__ndarray__"


def encode(record) -> bytes:
    arrays = {}

    def to_json(value):
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                return [to_json(v) for v in value.tolist()]
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {_ARRAY_TAG: name}
        if isinstance(value, dict):
            return {str(k): to_json(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [to_json(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value

    structure = json.dumps(to_json(record))
    buffer = io.BytesIO()
    np.savez(buffer, __structure__=np.frombuffer(structure.encode("utf-8"), dtype=np.uint8), **arrays)
    return buffer.getvalue()


def decode(blob: bytes):
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    structure = json.loads(arrays.pop("__structure__").tobytes().decode("utf-8"))

    def from_json(value):
        if isinstance(value, dict):
            if set(value) == {_ARRAY_TAG}:
                return arrays[value[_ARRAY_TAG]]
            return {k: from_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [from_json(v) for v in value]
        return value

    return from_json(structure)


def read_frame(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("truncated frame")
    return data


def write_frame(stream, data: bytes) -> None:
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def serve() -> None:
    """Deserialise legacy pyarrow records from stdin until an empty frame arrives."""
    import pyarrow  # only in the isolated environment

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        frame = read_frame(stdin)
        if not frame:
            return
        try:
            reply = b"ok" + encode(pyarrow.deserialize(frame))
        except Exception as error:  # report, keep serving: one bad record must not hide the rest
            reply = b"er" + f"{type(error).__name__}: {error}".encode("utf-8")
        write_frame(stdout, reply)


if __name__ == "__main__":
    serve()
