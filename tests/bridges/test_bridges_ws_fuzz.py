"""Fuzzing the WebSocket control input: random and mutated messages, checked against a
reference validator written here from the schema, through a real socket.

Schema (bridges/ws_control.py, bridges/control.py): a JSON object {"type": "control", ...} with at least one of
"style" (1-32 of [A-Za-z0-9_-], one of the offered styles), "intensity" (a number,
not a boolean, in [0, 3]) and "mute" (true/false), nothing else, no repeated keys,
no NaN/Infinity, at most max_control_bytes of UTF-8.
"""

from __future__ import annotations

import json
import math
import random
import string
import time

from websockets.sync.client import connect

from hop.bridges.control import ControlError
from hop.bridges.ws import WebSocketOptions, WebSocketSink
from hop.bridges.ws_control import parse_control

STYLES = ("calm", "lively", "host_2")
MAX_BYTES = 512


def reference(text: str) -> dict | None:
    """The fields a valid message sets, or None when it must be rejected."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return None

    def pairs(items):
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise ValueError("repeated key")
        return dict(items)

    def constant(name):
        raise ValueError(name)

    try:
        message = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except (ValueError, RecursionError):
        return None
    if type(message) is not dict or message.get("type") != "control":
        return None
    fields = {k: v for k, v in message.items() if k != "type"}
    if not fields or not set(fields) <= {"style", "intensity", "mute"}:
        return None
    if "style" in fields:
        style = fields["style"]
        if type(style) is not str or style not in STYLES:
            return None
    if "intensity" in fields:
        value = fields["intensity"]
        if type(value) not in (int, float) or not (0 <= value <= 3):  # NaN fails the comparison
            return None
        fields["intensity"] = float(value)
    if "mute" in fields and type(fields["mute"]) is not bool:
        return None
    return fields


ODD_VALUES = [None, True, False, 0, 1, 2, 3, -1, 0.5, 1.9999999, 2.0000001, -0.0, 1e308, -1e308, 1e-320, 10 ** 30,
              "", "calm", "CALM", "calm ", "lively", "host_2", "a" * 33, "../../etc", "<script>", "\u0000", "é",
              [], [1], {}, {"type": "control"}, "true", "1", 2 ** 63, "NaN"]
RAW_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 350, "0" * 20 + "1", "00", "-", "1.", ".5",
              "+1", "0x1", "tru", "nul", "'calm'", '"\\ud800"', '"\\u0000"']


def valid_message(rng: random.Random) -> dict:
    keys = rng.sample(["style", "intensity", "mute"], rng.randint(1, 3))
    message = {"type": "control"}
    for key in keys:
        message[key] = {"style": lambda: rng.choice(STYLES), "intensity": lambda: round(rng.uniform(0, 2), 3),
                        "mute": lambda: rng.random() < 0.5}[key]()
    return message


def mutate(rng: random.Random, text: str) -> str:
    kind = rng.randrange(9)
    chars = list(text)
    if kind == 0 and chars:  # flip characters
        for _ in range(rng.randint(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(string.printable + "é€\u2028")
        return "".join(chars)
    if kind == 1 and chars:  # delete a slice
        i = rng.randrange(len(chars))
        return text[:i] + text[i + rng.randint(1, 8):]
    if kind == 2:  # insert JSON punctuation
        i = rng.randint(0, len(text))
        return text[:i] + rng.choice(['"', "{", "}", "[", "]", ",", ":", "\\", " ", "null"]) + text[i:]
    if kind == 3:  # truncate
        return text[:rng.randint(0, len(text))]
    if kind == 4:  # repeat a key
        return text[:-1] + rng.choice([', "mute": true}', ', "type": "control"}', ', "intensity": 1}'])
    if kind == 5:  # an odd value for a field
        message = json.loads(text)
        message[rng.choice(["style", "intensity", "mute", "type", "extra"])] = rng.choice(ODD_VALUES)
        return json.dumps(message)
    if kind == 6:  # a raw (possibly non-JSON) value
        key = rng.choice(["style", "intensity", "mute"])
        return '{"type": "control", "%s": %s}' % (key, rng.choice(RAW_VALUES))
    if kind == 7:  # padding and nesting
        return rng.choice([" " * rng.randint(0, 600) + text, "[" * rng.randint(1, 300) + text + "]" * rng.randint(0, 300),
                           '{"type": "control", "style": "' + "x" * rng.randint(0, 600) + '"}'])
    return json.dumps(rng.choice(ODD_VALUES))  # another JSON document altogether


def random_message(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.25:
        return json.dumps(valid_message(rng), separators=rng.choice([(",", ":"), (", ", ": ")]))
    if roll < 0.85:
        text = json.dumps(valid_message(rng))
        for _ in range(rng.randint(1, 3)):
            try:
                text = mutate(rng, text)
            except (ValueError, TypeError):  # mutation 5 needs a parseable JSON object
                pass
        return text
    alphabet = rng.choice([string.printable, '{}[]":,0123456789.eE-+ntrufalsecotyp', "".join(map(chr, range(1, 0x250)))])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))


def messages(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [random_message(rng) for _ in range(count)]


def test_bridges_ws_fuzz_parse_control_matches_schema():
    corpus = messages(1, 20000)
    verdicts = 0
    for text in corpus:
        want = reference(text)
        try:
            control = parse_control(text, STYLES) if len(text.encode("utf-8", "surrogatepass")) <= MAX_BYTES \
                else None
        except ControlError:
            control = None
        got = None if control is None else {k: v for k, v in vars(control).items() if v is not None}
        assert got == want, text
        verdicts += want is not None
    # The corpus exercises both sides.
    assert 3000 < verdicts < 17000


def test_bridges_ws_fuzz_through_socket_changes_state_only_when_valid():
    sink = WebSocketSink(WebSocketOptions(port=0, control_rate_hz=1e6, max_control_bytes=MAX_BYTES, styles=STYLES))
    state = {"style": "calm", "intensity": 1.0, "mute": False}
    expected_state = dict(state)
    calls = []

    def apply(control) -> None:
        calls.append(control)
        for key, value in vars(control).items():
            if value is not None:
                state[key] = value

    sink.on_control(apply)
    corpus = messages(2, 10000)
    start = time.perf_counter()
    try:
        with connect(sink.url, max_size=None) as client:
            assert json.loads(client.recv(timeout=5))["type"] == "hello"
            window = 8  # fewer outstanding than the server's reply queue, so no reply is dropped
            for first in range(0, len(corpus), window):
                batch = corpus[first:first + window]
                for text in batch:
                    client.send(text)
                for text in batch:
                    reply = json.loads(client.recv(timeout=5))
                    want = reference(text)
                    if want is None:
                        assert reply["type"] == "error", (text, reply)
                        assert reply["error"] in ("bad_json", "bad_schema", "bad_value", "too_large"), reply
                    else:
                        assert reply == {"type": "accepted", "control": want}, (text, reply)
                        expected_state.update(want)
                # Every message of the batch has been handled once its reply is in.
                assert state == expected_state, batch
        accepted = sum(reference(text) is not None for text in corpus)
        stats = sink.stats()
        assert len(calls) == accepted == stats["control_accepted"]
        assert stats["control_rejected"] == len(corpus) - accepted
        assert stats["errors"] == 0
        # And the sink still streams after all that.
        with connect(sink.url) as client:
            assert json.loads(client.recv(timeout=5))["type"] == "hello"
    finally:
        sink.close()
    assert time.perf_counter() - start < 60
    assert not math.isnan(state["intensity"]) and 0 <= state["intensity"] <= 2
