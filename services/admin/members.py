"""Putting people in groups before they first sign in, one group at a time or from a CSV file
(pure: what to create and add; ``people.py`` asks the hub to do it).

A CSV file has a user name and the groups they belong to on each line, groups separated by ``;``
(or spaces); a first line ``user,groups`` is a header; further columns (an e-mail, a full name)
are ignored::

    user,groups
    ann,student
    ben,student;researcher
    carl,

Names are lower-cased as the hub does (JupyterHub's default ``normalize_username``), so that
``Ann`` in a file is the ``ann`` who signs in.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from hub_plugins.settings.patterns import NAME
from hub_plugins.validation import names_list, shown

MAX_ROWS = 5000
_SPLIT = re.compile(r"[;|\s]+")
_NAMES = re.compile(r"[,;\s]+")
HEADER = ("user", "username", "name", "login")


@dataclass(frozen=True)
class Plan:
    """People to create (if missing) and who to add to which group; rows refused, with why."""

    users: tuple[str, ...]
    groups: dict[str, tuple[str, ...]]
    errors: tuple[str, ...] = ()


def valid(name: str) -> bool:
    return bool(re.match(NAME, name)) and len(name) <= 255


def _plan(rows: list[tuple[str, str, list[str]]]) -> Plan:
    """``rows``: (where, user, groups)."""
    users: dict[str, None] = {}
    groups: dict[str, dict[str, None]] = {}
    errors = []
    for where, user, names in rows:
        user = user.strip().lower()
        if not valid(user):
            errors.append(f"{where}: {shown(user)} is not a user name (letters, digits, '.', '_', '@', '-')")
            continue
        bad = [g for g in names if not valid(g)]
        if bad:
            errors.append(f"{where}: {names_list(bad)} is not a group name")
            continue
        users[user] = None
        for g in names:
            groups.setdefault(g, {})[user] = None
    return Plan(tuple(users), {g: tuple(m) for g, m in groups.items()}, tuple(errors))


def plan_group(group: str, text: str) -> Plan:
    """People typed into the page (separated by commas, spaces or lines) for one group."""
    names = [n for n in _NAMES.split(text or "") if n]
    if not valid(group):
        return Plan((), {}, (f"{shown(group)} is not a group name",))
    if not names:
        return Plan((), {}, ("Name at least one person.",))
    return _plan([(shown(n), n, [group]) for n in names])


def plan_csv(text: str) -> Plan:
    """A CSV file's people and their groups."""
    rows = []
    reader = csv.reader(io.StringIO(text or ""))
    for i, row in enumerate(reader, 1):
        if i > MAX_ROWS:
            return Plan((), {}, (f"The file has more than {MAX_ROWS} lines; split it.",))
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if i == 1 and cells[0].lower() in HEADER:
            continue
        groups = [g for g in _SPLIT.split(cells[1]) if g] if len(cells) > 1 else []
        rows.append((f"line {i}", cells[0], groups))
    if not rows:
        return Plan((), {}, ("The file names nobody: one 'user,groups' per line, e.g. 'ann,student'.",))
    return _plan(rows)
