"""Profiles for crash tests, next to the shipped ones, in a directory every user may read (per-user
system accounts run them when the tests run as root).

``patient``: its server first waits (up to 3 minutes) until the hub's API answers, then runs the
real ``jupyterhub-singleuser``. A real lab's servers outlive hub restarts; jupyterhub-singleuser
itself gives up after about 46 s without its hub, which on a slow, busy test machine (where a
restart takes that long) would make servers that a crash orphaned disappear by themselves and hide
what the tests look for. ``GPULAB_TEST_START_DELAY`` (seconds, in the profile's env) makes it
wait that much more first, to widen the window between "started" and "recorded".
"""

from __future__ import annotations

import shutil
import stat
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PATIENT = '''#!{python}
import os, sys, time, urllib.request
time.sleep(float(os.environ.get("GPULAB_TEST_START_DELAY", "0")))
url = os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/"
deadline = time.time() + 180
while time.time() < deadline:
    try:
        urllib.request.urlopen(url, timeout=2)
        break
    except Exception:
        time.sleep(0.2)
real = {real!r}
os.execv(real, [real, *sys.argv[1:]])
'''


def make_profiles(extra: dict[str, str] | None = None) -> Path:
    """A temporary profiles dir: the shipped profiles plus ``patient`` (and ``extra``: name -> yaml)."""
    d = Path(tempfile.mkdtemp(prefix="gpulab-profiles-", dir="/tmp"))
    d.chmod(0o755)
    for p in (ROOT / "profiles").glob("*.yaml"):
        shutil.copy(p, d)
    env = d / "patient-env" / "bin"
    env.mkdir(parents=True)
    exe = env / "jupyterhub-singleuser"
    real = str(Path(sys.executable).parent / "jupyterhub-singleuser")
    exe.write_text(PATIENT.format(python=sys.executable, real=real))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    for p in (d / "patient-env", env):
        p.chmod(0o755)
    (d / "patient.yaml").write_text(
        f"display_name: Patient\nlocal:\n  prefix: {d / 'patient-env'}\ngpus:\n  counts: [0, 1, 2]\n")
    for name, text in (extra or {}).items():
        (d / f"{name}.yaml").write_text(text)
    return d
