"""Read ``gpulab.yaml``: parse, validate against the schema, merge defaults, resolve paths and
secrets, and cross-check what the schema cannot (profiles, inventory spec, quota references).

Any problem raises :class:`ConfigError` naming the key; the hub refuses to start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..envs.manager import default_dir
from ..gpu.devices import valid_type_name
from ..gpu.sharing import rules_from_config
from ..gpu.simulated import SpecError, parse_spec
from ..spawn.profiles import load_dir
from .auth import check_auth
from .defaults import deep_merge
from .errors import ConfigError
from .schema import DEFAULTS, GPULAB_SCHEMA
from .secrets import read_secret
from .validate import validate

ENV_VAR = "GPULAB_CONFIG"
# the profiles that come with gpulab (profiles_dir: null), wherever the config file lives
SHIPPED_PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def config_path(config_dir: Path) -> Path:
    """``$GPULAB_CONFIG`` if set, else ``gpulab.yaml`` beside ``jupyterhub_config.py``."""
    return Path(os.environ.get(ENV_VAR) or config_dir / "gpulab.yaml").resolve()


def gpulab_db_url(cfg: dict) -> str:
    """gpulab's tables live in the hub's database when it is PostgreSQL; with SQLite they get
    their own file, so the allocator never waits on JupyterHub's write lock."""
    return cfg["hub"]["db_url"] or f"sqlite:///{os.path.join(cfg['hub']['state_dir'], 'gpulab.sqlite')}"


def load(path: str | os.PathLike, secrets: bool = True) -> dict[str, Any]:
    """The validated file with its defaults. ``secrets=False`` (services) leaves secret
    references ('env:...', 'file:...') unread: only the hub's environment holds them."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set {ENV_VAR} to your gpulab.yaml)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (hub, gpus, quotas, ...)")
    validate(raw, GPULAB_SCHEMA, str(path))
    cfg = deep_merge(DEFAULTS, raw)
    base = path.parent
    cfg["_path"] = str(path)
    hub = cfg["hub"]
    hub["state_dir"] = str((base / hub["state_dir"]).resolve())
    cfg["profiles_dir"] = str((base / cfg["profiles_dir"]).resolve() if cfg["profiles_dir"] else SHIPPED_PROFILES)
    envs = cfg["environments"]
    if envs["dir"] == "auto":
        envs["dir"] = default_dir(os.geteuid() == 0, os.path.expanduser("~"))
    else:
        envs["dir"] = str((base / os.path.expanduser(envs["dir"])).resolve())
    hub["api_tokens"] = {name: read_secret(tok, f"hub.api_tokens.{name}") if secrets else tok
                         for name, tok in (hub["api_tokens"] or {}).items()}
    quotas = cfg["quotas"]
    quotas["groups"] = quotas.get("groups") or {}
    quotas["overrides"] = quotas.get("overrides") or []
    _check_inventory(cfg)
    _check_references(cfg)
    check_auth(cfg, secrets)
    return cfg


def _check_inventory(cfg: dict) -> None:
    spec = cfg["gpus"]["inventory"]
    if spec != "auto":
        try:
            parse_spec(spec)
        except SpecError as e:
            raise ConfigError(f"gpus.inventory: {e}") from None
    try:
        rules_from_config(cfg["gpus"]["sharing"])
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_references(cfg: dict) -> None:
    """Quota rules that name profiles or GPU types must name real ones (typos lock users out)."""
    catalog = load_dir(cfg["profiles_dir"], cfg["default_profile"], cfg["gpus"]["max_per_server"])
    q = cfg["quotas"]
    places = [("quotas.default", q.get("default") or {})]
    places += [(f"quotas.groups.{g}", lim or {}) for g, lim in q["groups"].items()]
    places += [(f"quotas.overrides[{i}]", o) for i, o in enumerate(q["overrides"])]
    for where, lim in places:
        profiles = lim.get("profiles")
        if isinstance(profiles, list):
            unknown = [p for p in profiles if p != "*" and catalog.get(p) is None]
            if unknown:
                raise ConfigError(
                    f"{where}.profiles: unknown profile {', '.join(map(repr, unknown))} "
                    f"(profiles: {', '.join(catalog.names)})"
                )
        types = lim.get("gpu_types")
        if isinstance(types, list):
            bad = [t for t in types if t != "*" and not valid_type_name(t)]
            if bad:
                raise ConfigError(
                    f"{where}.gpu_types: {', '.join(map(repr, bad))} is not a GPU type name "
                    "(e.g. 'A100-80GB', 'A100-80GB:1g.10gb', 'A100-80GB:shared')"
                )
