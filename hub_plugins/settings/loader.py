"""Read ``gpulab.yaml``: parse, validate against the schema, merge defaults, resolve paths and
secrets, and cross-check what the schema cannot (profiles, inventory spec, quota references).

Any problem raises :class:`ConfigError` naming the key; the hub refuses to start.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from ..gpu.devices import valid_type_name
from ..gpu.simulated import SpecError, parse_spec
from .errors import ConfigError
from .schema import DEFAULTS, GPULAB_SCHEMA
from .validate import validate

ENV_VAR = "GPULAB_CONFIG"


def config_path(config_dir: Path) -> Path:
    """``$GPULAB_CONFIG`` if set, else ``gpulab.yaml`` beside ``jupyterhub_config.py``."""
    return Path(os.environ.get(ENV_VAR) or config_dir / "gpulab.yaml").resolve()


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_secret(value: str, where: str, min_length: int = 32) -> str:
    """'env:NAME' reads an environment variable, 'file:/path' a file; anything else is literal.

    ``min_length`` guards tokens we generate; secrets issued by others (an OAuth client secret,
    an LDAP password) are checked only for being non-empty (``min_length=1``)."""
    if value.startswith("env:"):
        name = value[4:]
        if not os.environ.get(name):
            raise ConfigError(f"{where}: environment variable {name} is not set")
        secret = os.environ[name].strip()
    elif value.startswith("file:"):
        path = value[5:]
        try:
            secret = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    else:
        secret = value
    if min_length > 1 and len(secret) < min_length:
        raise ConfigError(f"{where}: a token must have at least {min_length} characters (generate one with `openssl rand -hex 32`)")
    if not secret:
        raise ConfigError(f"{where}: the secret is empty")
    return secret


def load(path: str | os.PathLike) -> dict[str, Any]:
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
    cfg["profiles_dir"] = str((base / cfg["profiles_dir"]).resolve())
    envs = cfg["environments"]
    if envs["dir"] == "auto":
        from ..envs.manager import default_dir

        envs["dir"] = default_dir(os.geteuid() == 0, os.path.expanduser("~"))
    else:
        envs["dir"] = str((base / os.path.expanduser(envs["dir"])).resolve())
    hub["api_tokens"] = {
        name: read_secret(tok, f"hub.api_tokens.{name}") for name, tok in (hub["api_tokens"] or {}).items()
    }
    quotas = cfg["quotas"]
    quotas["groups"] = quotas.get("groups") or {}
    quotas["overrides"] = quotas.get("overrides") or []
    _check_inventory(cfg)
    _check_references(cfg)
    from .auth import check_auth  # auth's own cross-checks and secrets

    check_auth(cfg)
    return cfg


def _check_inventory(cfg: dict) -> None:
    spec = cfg["gpus"]["inventory"]
    if spec != "auto":
        try:
            parse_spec(spec)
        except SpecError as e:
            raise ConfigError(f"gpus.inventory: {e}") from None


def _check_references(cfg: dict) -> None:
    """Quota rules that name profiles or GPU types must name real ones (typos lock users out)."""
    from ..profiles import load_dir

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
