"""Profiles: one YAML file per profile in ``profiles/``, the single source for the spawn form, the
images and the Helm values. The file name (without ``.yaml``) is the profile's name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..envs.spec import EnvSpec, image_ref
from ..quota.limits import parse_bytes
from ..settings.errors import ConfigError
from ..settings.schema import PROFILE_NAME, PROFILE_SCHEMA
from ..settings.validate import validate


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    description: str = ""
    order: int = 100
    default: bool = False
    image: str = ""
    default_url: str = "/lab"
    local_prefix: str = ""  # "" = not available on the local backend
    local_args: tuple[str, ...] = ()
    gpu_counts: tuple[int, ...] = (0,)
    gpu_default: int = 0
    gpu_types: frozenset[str] | None = None  # None = any type the hub has
    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    mem_limit: int | None = None
    mem_guarantee: int | None = None
    groups: frozenset[str] | None = None  # None = everyone
    env: dict[str, str] = field(default_factory=dict)
    path: str = ""
    environment: EnvSpec | None = None  # the pinned environment (local env, image, its tag)

    @property
    def max_gpus(self) -> int:
        return max(self.gpu_counts)

    def allows_group(self, user_groups) -> bool:
        return self.groups is None or bool(self.groups & set(user_groups))

    def allows_type(self, gpu_type: str) -> bool:
        return self.gpu_types is None or gpu_type in self.gpu_types

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "image": self.image,
            "gpu_counts": list(self.gpu_counts),
            "gpu_default": self.gpu_default,
            "gpu_types": None if self.gpu_types is None else sorted(self.gpu_types),
            "cpu_limit": self.cpu_limit,
            "mem_limit": self.mem_limit,
        }


def _names(value) -> frozenset[str] | None:
    if value in (None, "*"):
        return None
    return frozenset(value)


def profile_from_dict(name: str, data: dict[str, Any], path: str = "", max_per_server: int = 4) -> Profile:
    where = path or f"profile '{name}'"
    validate(data, PROFILE_SCHEMA, where)
    gpus = data.get("gpus") or {}
    counts = tuple(sorted(gpus.get("counts", [0])))
    if max(counts) > max_per_server:
        raise ConfigError(
            f"{where}: gpus.counts: {max(counts)} is more than gpus.max_per_server ({max_per_server})"
        )
    default = gpus.get("default", counts[0])
    if default not in counts:
        raise ConfigError(f"{where}: gpus.default: {default} is not one of gpus.counts {list(counts)}")
    res = data.get("resources") or {}
    local = data.get("local") or {}
    spec = None
    if data.get("environment"):
        try:
            spec = EnvSpec.from_dict(name, data["environment"])
        except ValueError as e:
            raise ConfigError(f"{where}: environment: {e}") from None
    # a pinned environment is built by gpulab under environments.dir unless 'local' names one
    prefix = local.get("prefix", f"{{envs}}/{spec.dirname}" if spec else "")
    return Profile(
        name=name,
        display_name=data["display_name"],
        description=describe(data.get("description", ""), spec, where),
        order=data.get("order", 100),
        default=data.get("default", False),
        image=image_ref(data.get("image", ""), spec),
        default_url=data.get("default_url", "/lab"),
        local_prefix=prefix,
        local_args=tuple(local.get("args", ())),
        gpu_counts=counts,
        gpu_default=default,
        gpu_types=_names(gpus.get("types", "*")),
        cpu_limit=res.get("cpu_limit"),
        cpu_guarantee=res.get("cpu_guarantee"),
        mem_limit=parse_bytes(res["mem_limit"]) if "mem_limit" in res else None,
        mem_guarantee=parse_bytes(res["mem_guarantee"]) if "mem_guarantee" in res else None,
        groups=_names(data.get("groups", "*")),
        env=dict(data.get("env") or {}),
        path=path,
        environment=spec,
    )


def describe(text: str, spec: EnvSpec | None, where: str) -> str:
    """A description's ``{package}`` placeholders become the pinned versions, so the form always
    states what is installed: "PyTorch {torch}" -> "PyTorch 2.15.0"."""

    def version(m: re.Match) -> str:
        found = spec.version(m[1]) if spec else None
        if found is None:
            raise ConfigError(f"{where}: description: {{{m[1]}}} is not a pinned package of its environment")
        return found

    return re.sub(r"\{([A-Za-z0-9._@/-]+)\}", version, text)


class Catalog:
    """The loaded profiles, in display order."""

    def __init__(self, profiles: list[Profile], default: str | None = None):
        self.profiles = sorted(profiles, key=lambda p: (p.order, p.name))
        self._by_name = {p.name: p for p in self.profiles}
        if default and default not in self._by_name:
            raise ConfigError(
                f"default_profile: unknown profile '{default}' (profiles: {', '.join(self.names) or 'none'})"
            )
        marked = [p.name for p in self.profiles if p.default]
        self.default = default or (marked[0] if marked else (self.names[0] if self.names else None))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.profiles]

    def get(self, name: str) -> Profile | None:
        return self._by_name.get(name)

    def __iter__(self):
        return iter(self.profiles)

    def __len__(self):
        return len(self.profiles)


def load_dir(directory: str | os.PathLike, default: str | None = None, max_per_server: int = 4) -> Catalog:
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"profiles_dir: {d} is not a directory")
    profiles = []
    for path in sorted(d.glob("*.yaml")):
        name = path.stem
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a mapping of profile settings")
        if not re.match(PROFILE_NAME, name):
            raise ConfigError(f"{path}: profile file names must be lowercase letters, digits and '-'")
        profiles.append(profile_from_dict(name, data, str(path), max_per_server))
    if not profiles:
        raise ConfigError(f"profiles_dir: no *.yaml profiles in {d}")
    return Catalog(profiles, default)
