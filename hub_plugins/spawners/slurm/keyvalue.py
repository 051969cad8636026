"""Parse the one-line ``Key=Value Key=Value`` records of ``scontrol show ... -o`` (pure).

Values may contain spaces (``OS=Linux 6.1.0 #1 SMP``, ``Reason=Not responding [root@...]``): a
word without ``=`` belongs to the value before it.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9_:/]*)=(.*)$")


def parse_record(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    last = None
    for word in line.split():
        m = _KEY.match(word)
        if m:
            last = m.group(1)
            out[last] = m.group(2)
        elif last is not None:
            out[last] = f"{out[last]} {word}"
    return out


def parse_records(text: str) -> list[dict[str, str]]:
    return [parse_record(line) for line in text.splitlines() if line.strip()]


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses: 'gpu:a:2(IDX:0,2),gpu:b:1' -> two items."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p]
