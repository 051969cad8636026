"""Local-process backend: servers are processes on the hub's machine (``spawner.py``), run as
per-user system accounts when the hub is root (``sysusers.py``)."""
