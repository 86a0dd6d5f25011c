"""A small Praat TextGrid reader (long and short text formats, UTF-8 or UTF-16).

Both formats hold the same sequence of values; the long one adds labels
(``xmin =``, ``intervals [3]:``). So the reader keeps only the values (quoted
strings, numbers, ``<exists>``) and walks them in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_VALUE = re.compile(r'"((?:[^"]|"")*)"|(?<![\w\[])(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)(?![\w\]])|<exists>')


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Tier:
    name: str
    kind: str  # "IntervalTier" or "TextTier" (points: start == end)
    intervals: list[Interval]


def _read_text(path: Path) -> str:
    raw = Path(path).read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    return raw.decode("utf-8-sig")


def parse_textgrid(text: str) -> dict[str, Tier]:
    values = []
    for match in _VALUE.finditer(re.sub(r"\[\s*\d*\s*\]", "", text)):
        string, number = match.group(1), match.group(2)
        values.append(string.replace('""', '"') if string is not None else
                      float(number) if number is not None else "<exists>")
    if values[:2] != ["ooTextFile", "TextGrid"]:
        raise ValueError("not a Praat TextGrid (expected 'File type = \"ooTextFile\"' and 'Object class = \"TextGrid\"')")
    # file xmin, xmax, <exists>, number of tiers
    pos = 6 if values[4] == "<exists>" else 4
    n_tiers = int(values[pos - 1]) if pos == 6 else 0
    tiers = {}
    for _ in range(n_tiers):
        kind, name, _xmin, _xmax, count = values[pos:pos + 5]
        pos += 5
        intervals = []
        for _ in range(int(count)):
            if kind == "IntervalTier":
                start, end, label = values[pos:pos + 3]
                pos += 3
            else:
                start, label = values[pos:pos + 2]
                end = start
                pos += 2
            intervals.append(Interval(float(start), float(end), str(label)))
        tiers[str(name)] = Tier(str(name), str(kind), intervals)
    return tiers


def read_textgrid(path: str | Path) -> dict[str, Tier]:
    return parse_textgrid(_read_text(Path(path)))


def read_words(path: str | Path, tier: str = "words") -> list[tuple[str, float, float]]:
    """Non-empty intervals of the word tier as ``[(word, start_s, end_s), ...]``."""
    tiers = read_textgrid(path)
    if tier not in tiers:
        raise ValueError(f"{path} has no tier {tier!r}; its tiers are {sorted(tiers)}")
    return [(i.text, i.start, i.end) for i in tiers[tier].intervals if i.text.strip()]
