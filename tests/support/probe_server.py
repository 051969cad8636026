"""A single-user server stand-in that tests use to act *inside* a server: it answers the hub's
readiness check at ``<prefix>api`` and, under ``<prefix>api/probe/``, allocates memory, spins
CPUs or opens a device node when asked, reporting what the kernel said. What it reports is only
a hint: the tests read the outcome from the outside (/proc, the hub's tables and log).
"""

import errno
import os
import subprocess
import sys
from urllib.parse import urlparse

from tornado import ioloop, web

HOLD = []  # memory kept alive


class API(web.RequestHandler):
    def get(self):
        self.set_header("X-JupyterHub-Version", os.environ.get("JUPYTERHUB_VERSION", "6.1.1"))
        self.finish({"version": "probe", "pid": os.getpid()})


class Alloc(web.RequestHandler):
    def get(self):
        mb = int(self.get_argument("mb"))
        for _ in range(mb):
            HOLD.append(bytearray(2**20))  # bytearray zero-fills: the pages are really used
        self.finish({"held_mb": len(HOLD)})


class Spin(web.RequestHandler):
    def get(self):
        seconds, procs = float(self.get_argument("seconds")), int(self.get_argument("procs", "2"))
        code = f"import time\nt = time.monotonic()\nwhile time.monotonic() - t < {seconds}: pass\n"
        pids = [subprocess.Popen([sys.executable, "-c", code]).pid for _ in range(procs)]
        self.finish({"pids": pids})


class Open(web.RequestHandler):
    def get(self):
        path = self.get_argument("path")
        try:
            os.close(os.open(path, os.O_RDWR))
            self.finish({"ok": True, "errno": ""})
        except OSError as e:
            self.finish({"ok": False, "errno": errno.errorcode.get(e.errno, str(e.errno))})


def main():
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    prefix = os.environ["JUPYTERHUB_SERVICE_PREFIX"]
    app = web.Application([
        (prefix + "api", API), (prefix.rstrip("/") + "/api", API),
        (prefix + "api/probe/alloc", Alloc), (prefix + "api/probe/spin", Spin), (prefix + "api/probe/open", Open),
    ])
    app.listen(url.port, address=url.hostname or "127.0.0.1")
    ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
