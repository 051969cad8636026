"""What `make run` prints before the hub starts: where to go and how the first admin signs in."""

import os
import sys
from pathlib import Path

from hub_plugins.envs.manager import EnvDir, buildable
from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.loader import load
from hub_plugins.spawn.profiles import load_dir


def environments(cfg: dict) -> str:
    """Which profile environments are missing, and what happens to them."""
    catalog = load_dir(cfg["profiles_dir"], cfg["default_profile"], cfg["gpus"]["max_per_server"])
    envdir = EnvDir(cfg["environments"]["dir"])
    missing = [p.name for p in buildable(catalog, None) if envdir.marker(p.environment) is None]
    if cfg["backend"] != "local" or not missing:
        return f"Environments: {envdir.root}"
    if cfg["environments"]["build_missing"]:
        return (f"Environments: building {', '.join(missing)} in the background into {envdir.root}\n"
                "  (the spawn form shows their progress; PyTorch and TensorFlow take a few minutes and 6-7 GB each)")
    return f"Environments: {', '.join(missing)} not built: run `make envs` (into {envdir.root})"


def main() -> int:
    path = Path(os.environ.get("GPULAB_CONFIG", "config/gpulab.yaml")).resolve()
    try:
        cfg = load(path)
    except ConfigError as e:
        print(f"gpulab: fix {path} first:\n{e}", file=sys.stderr)
        return 2
    url = cfg["hub"]["bind_url"].rstrip("/")
    admins = ", ".join(cfg["hub"]["admin_users"]) or "(none: set hub.admin_users)"
    kind = cfg["auth"]["kind"]
    if kind == "native":
        how = f"""First admin: open {url}/hub/signup and sign up as one of: {admins}
               (admins are approved at sign-up; a password of at least {cfg['auth']['native']['minimum_password_length']} characters).
  Other users sign up the same way; an admin approves them at {url}/hub/authorize."""
    else:
        groups = ", ".join(cfg["auth"]["allowed_groups"]) or "see auth.allowed_users / allow_all"
        how = f"""Sign-in: {kind} ({cfg['auth'][kind].get('issuer') or cfg['auth'][kind].get('server_address') or kind});
               allowed groups: {groups}; admins: {admins}"""
    print(
        f"""
  gpulab is starting at {url}/hub/
  {how}
  Quotas and overrides: {url}/services/quotas/
  GPUs: {cfg['gpus']['inventory']}   config: {path}
  Stop with Ctrl-C. Running servers keep running (and holding their GPUs) and the next start
  takes them back: stop them first on /hub/home (yours) or /hub/admin (everyone's).
  {environments(cfg)}
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
