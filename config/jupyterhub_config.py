"""JupyterHub configuration for gpulab: everything comes from one file, gpulab.yaml.

Admins edit ``config/gpulab.yaml`` (or point ``GPULAB_CONFIG`` at another file); this file only
loads it, validates it and applies it. Add plain JupyterHub settings below the marked line if
you need one gpulab.yaml does not cover.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # the checkout's own hub_plugins, also without `pip install -e`
    sys.path.insert(0, str(ROOT))

from hub_plugins.settings.apply import apply_all  # noqa: E402
from hub_plugins.settings.errors import ConfigError  # noqa: E402
from hub_plugins.settings.loader import config_path, load  # noqa: E402

c = get_config()  # noqa: F821

_path = config_path(HERE)
try:
    gpulab = load(_path)
    gpulab["_project_root"] = str(ROOT)
    apply_all(c, gpulab)  # a few checks need the hub's environment (e.g. JUPYTERHUB_CRYPT_KEY)
except ConfigError as e:
    print(f"\ngpulab: the hub will not start, fix {_path} first:\n{e}\n", file=sys.stderr)
    sys.exit(2)

# one hub per state directory, refused before it touches the running one's proxy and files
from hub_plugins.settings.statelock import StateInUse, claim  # noqa: E402

try:
    claim(gpulab["hub"]["state_dir"])
except StateInUse as e:
    print(f"\ngpulab: the hub will not start: {e}\n", file=sys.stderr)
    sys.exit(2)

# What really runs is reconciled with gpulab's allocations once the hub is up and before any
# spawn goes ahead, then every poll interval (JupyterHub has no start-up hook for plugins).
from hub_plugins.reconcile.supervisor import schedule  # noqa: E402

schedule()

# gpulab's services start side by side, and the hub stops even while its database is down
from hub_plugins.settings.hubapp import adapt  # noqa: E402

adapt()

# ---- site-specific JupyterHub settings below this line ----
