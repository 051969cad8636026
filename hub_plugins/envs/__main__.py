"""``make envs``: build the profiles' environments for the local backend.

    python -m hub_plugins.envs                         # every profile with an environment
    python -m hub_plugins.envs --profiles pytorch,vscode
    python -m hub_plugins.envs --list                  # where each one is, its state and size

Reads gpulab.yaml (``GPULAB_CONFIG``) for ``environments.dir`` and the profiles. An environment
whose pins have not changed is not rebuilt (its stamp is there); two builds of one environment
never run at once (the second waits for the first, then finds it built).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..settings.errors import ConfigError
from ..settings.loader import load
from ..spawn.profiles import load_dir
from .manager import EnvDir, buildable


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default=os.environ.get("PROFILES", ""), help="comma-separated (default: all)")
    ap.add_argument("--dir", help="override environments.dir")
    ap.add_argument("--list", action="store_true", help="show each environment's state and size; build nothing")
    args = ap.parse_args(argv)
    path = Path(os.environ.get("GPULAB_CONFIG", "config/gpulab.yaml")).resolve()
    try:
        cfg = load(path)
        catalog = load_dir(cfg["profiles_dir"], cfg["default_profile"], cfg["gpus"]["max_per_server"])
        names = [n.strip() for n in args.profiles.split(",") if n.strip()] or None
        profiles = buildable(catalog, names)
    except ConfigError as e:
        print(f"envs: {e}", file=sys.stderr)
        return 2
    envdir = EnvDir(args.dir or cfg["environments"]["dir"])
    failed = []
    for p in profiles:
        spec = p.environment
        if args.list:
            st = envdir.read_state(spec)
            size = f"{st.size / 1e9:.2f} GB" if st.size else ""
            print(f"{p.name:12} {st.state:9} {size:9} {envdir.prefix(spec)}" + (f"  ({st.error.splitlines()[0]})" if st.error else ""))
            continue
        t0 = time.monotonic()
        st = envdir.ensure(spec)
        if st.state != "ready":
            failed.append(p.name)
        elif time.monotonic() - t0 < 1:
            print(f"envs: {p.name} is up to date ({envdir.prefix(spec)}, {st.size / 1e9:.2f} GB)")
    if failed:
        print(f"envs: failed: {', '.join(failed)} (logs in {envdir.state_dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
