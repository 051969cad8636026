"""A simulated inventory from a one-line spec, for tests, demos and benchmarks.

It produces the same :class:`Inventory` an NVML scan produces, so everything above it (placement,
quotas, the form, the allocator) cannot tell the difference.

Grammar (whitespace is ignored; groups are separated by commas outside parentheses)::

    spec   := group ("," group)*
    group  := [N "x"] TYPE [ "+mig(" PROFILES ")" | "+shared(" REPLICAS ")" ] ["@" HOST]

Examples::

    4xA100-80GB
    2xA100-80GB, 2xH100-80GB
    1xA100-80GB+mig(3g.40gb, 2g.20gb, 2*1g.10gb), 1xA100-80GB
    1xA100-80GB+shared(4)              # one GPU time-shared by 4 servers (see sharing.py)
    8xA100-80GB@node1, 8xA100-80GB@node2

``TYPE`` ends in the memory size (``-80GB``) when it is known. MIG profiles must fit the GPU's
compute slices (7 on A100/H100/H200, 4 on A30).
"""

from __future__ import annotations

import re
import uuid
from fractions import Fraction

from .devices import MIG_SLICES, Device, Inventory, family_of, mig_memory_mib, mig_slices
from .sharing import MAX_SHARES, MIN_SHARES, check_uniform, share_gpu

_GROUP = re.compile(
    r"^(?:(?P<count>\d+)x)?(?P<type>[A-Za-z0-9][A-Za-z0-9._-]*?)"
    r"(?:\+(?P<mode>mig|shared)\((?P<args>[^()]*)\))?(?:@(?P<host>[A-Za-z0-9][A-Za-z0-9._-]*))?$"
)
_MEMORY = re.compile(r"-(\d+)GB$", re.IGNORECASE)
_NS = uuid.UUID("6f1b8d2e-8f7c-4c41-9d6e-3f1a2b4c5d6e")
MAX_DEVICES = 4096  # a spec is config; refuse typos like 40000xA100 instead of hanging


class SpecError(ValueError):
    pass


def _split_top(spec: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError("unbalanced ')'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError("unbalanced '('")
    parts.append("".join(cur))
    return parts


def _memory_mib(gpu_type: str) -> int:
    m = _MEMORY.search(gpu_type)
    return int(m.group(1)) * 1024 if m else 0


def _expand_profiles(args: str) -> list[str]:
    out = []
    for item in filter(None, args.split(",")):
        n, _, prof = item.rpartition("*")
        count = int(n) if n else 1
        mig_slices(prof)  # validates the name
        out.extend([prof] * count)
    return out


def _uuid(prefix: str, *parts) -> str:
    return f"{prefix}-{uuid.uuid5(_NS, '/'.join(map(str, parts)))}"


def parse_spec(spec: str) -> Inventory:
    """Parse an inventory spec; raises :class:`SpecError` naming the bad part."""
    text = re.sub(r"\s+", "", spec or "")
    if not text:
        raise SpecError("empty GPU inventory spec (use 'none' for no GPUs)")
    if text.lower() == "none":
        return Inventory((), source="simulated:none", note="simulated inventory with no GPUs")
    devices: list[Device] = []
    next_index: dict[str, int] = {}
    for part in _split_top(text):
        m = _GROUP.match(part)
        if not m:
            raise SpecError(
                f"cannot read '{part}': expected e.g. '4xA100-80GB', "
                "'1xA100-80GB+mig(3g.40gb,4*1g.10gb)', '1xA100-80GB+shared(4)' or '8xA100-80GB@node1'"
            )
        count = int(m.group("count") or 1)
        if count < 1:
            raise SpecError(f"'{part}': the count must be at least 1")
        gpu_type = m.group("type")
        host = m.group("host") or "localhost"
        mode, args = m.group("mode"), m.group("args") or ""
        model = f"NVIDIA {gpu_type} (simulated)"
        for _ in range(count):
            index = next_index.get(host, 0)
            next_index[host] = index + 1
            gpu_uuid = _uuid("GPU", host, index)
            base = dict(host=host, index=index, model=model)
            if mode == "mig":
                slices = MIG_SLICES.get(family_of(gpu_type))
                if not slices:
                    raise SpecError(f"'{part}': {gpu_type} does not support MIG")
                try:
                    profiles = _expand_profiles(args)
                except ValueError as e:
                    raise SpecError(f"'{part}': {e}") from None
                if not profiles:
                    raise SpecError(f"'{part}': +mig() needs at least one profile")
                used = sum(mig_slices(p) for p in profiles)
                if used > slices:
                    raise SpecError(
                        f"'{part}': MIG profiles use {used} compute slices, {gpu_type} has {slices}"
                    )
                for n, prof in enumerate(profiles):
                    devices.append(
                        Device(
                            key=f"{host}/gpu{index}/mig{n}",
                            gpu_type=f"{gpu_type}:{prof}",
                            uuid=_uuid("MIG", host, index, n),
                            memory_mib=mig_memory_mib(prof),
                            weight=Fraction(mig_slices(prof), slices),
                            mig_profile=prof,
                            **base,
                        )
                    )
            elif mode == "shared":
                if not args.isdigit() or not MIN_SHARES <= int(args) <= MAX_SHARES:
                    raise SpecError(f"'{part}': +shared(N) needs N from {MIN_SHARES} to {MAX_SHARES}")
                # the same split as a gpus.sharing rule on a discovered GPU
                devices.extend(share_gpu(Device(key=f"{host}/gpu{index}", gpu_type=gpu_type, uuid=gpu_uuid,
                                                memory_mib=_memory_mib(gpu_type), **base), int(args)))
            else:
                devices.append(
                    Device(
                        key=f"{host}/gpu{index}",
                        gpu_type=gpu_type,
                        uuid=gpu_uuid,
                        memory_mib=_memory_mib(gpu_type),
                        **base,
                    )
                )
            if len(devices) > MAX_DEVICES:
                raise SpecError(f"more than {MAX_DEVICES} devices: is '{part}' a typo?")
    try:
        check_uniform(devices)
    except ValueError as e:
        raise SpecError(str(e)) from None
    return Inventory(tuple(devices), source=f"simulated:{spec.strip()}")
