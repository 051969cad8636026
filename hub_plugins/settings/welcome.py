"""What `make run` prints before the hub starts: where to go and how the first admin signs in."""

import os
import sys
from pathlib import Path

from hub_plugins.settings.errors import ConfigError
from hub_plugins.settings.loader import load


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
               (admins are approved at sign-up; choose a password of 10+ characters).
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
  GPUs: {cfg['gpus']['inventory']}   config: {path}   Stop with Ctrl-C.
"""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
