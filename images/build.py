"""Build the profile images: ``make images`` (or ``python images/build.py``).

One source: each profile's ``image:`` and pinned ``environment`` (``profiles/*.yaml``). The image
``gpulab/<name>:<version>-<stamp>`` is built from ``images/<name>/Dockerfile`` (or, for a profile
without its own, ``images/env/Dockerfile``: the base plus the profile's pins) by the same
installer as the local environments (``hub_plugins/envs/install.py``, copied into the build with
the pins as ``env.json`` and the pinned ``uv``), which checks the result the same way. The base
image holds the minimal profile's environment; the others build FROM it.

    python images/build.py                      # every image the profiles name (registry: FROM python:3.11-slim)
    python images/build.py --only base,vscode   # just some of them (the base is built first if missing)
    python images/build.py --rootfs             # no registry: base FROM a debootstrap rootfs (images/rootfs.sh)
    python images/build.py --dry-run            # print the plan

The engine is the one ``DOCKER_HOST`` points at (default: the local socket).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE = "base"
GENERIC = "env"  # images/env/Dockerfile: FROM the base, plus a profile's pins
ROOTFS_IMAGE = "gpulab/rootfs:bookworm"
REGISTRY_BASE_IMAGE = "python:3.11-slim-bookworm"
IMAGE_RE = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._/-]*?/(?P<name>[a-z0-9][a-z0-9._-]*)):(?P<tag>[A-Za-z0-9._-]+)$")
INSTALLER = ROOT / "hub_plugins" / "envs" / "install.py"


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    name: str  # gpulab/<name>
    image: str  # repo:tag
    build_args: dict[str, str] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()
    dockerfile: str = ""  # images/<dockerfile>/Dockerfile
    spec: dict | None = None  # EnvSpec.as_dict(): env.json in the build context

    @property
    def context(self) -> Path:
        return HERE / (self.dockerfile or self.name)


@dataclass(frozen=True)
class Entry:
    """One image the profiles name: its reference, its pins, the profiles using it."""

    image: str
    profiles: tuple[str, ...]
    spec: dict | None = None


def profile_images(profiles_dir: Path) -> list[Entry]:
    """The images of ``profiles/*.yaml`` (tags from their pins), as the hub loads them."""
    sys.path.insert(0, str(ROOT))
    from hub_plugins.spawn.profiles import load_dir

    out: dict[str, Entry] = {}
    for p in load_dir(profiles_dir):
        if not p.image:
            continue
        spec = p.environment.as_dict() if p.environment else None
        old = out.get(p.image)
        if old and old.spec != spec:
            raise PlanError(f"profiles {old.profiles[0]} and {p.name} name image {p.image} with different pins")
        out[p.image] = Entry(p.image, (*(old.profiles if old else ()), p.name), spec)
    return list(out.values())


def plan(entries: list[Entry], available: set[str], base_image: str, only: set[str] | None = None) -> list[Step]:
    """The builds, base first (pure). ``available``: the directories of images/ with a Dockerfile."""
    steps: dict[str, Step] = {}
    for e in sorted(entries, key=lambda e: e.image):
        m = IMAGE_RE.match(e.image)
        if not m:
            raise PlanError(f"profile(s) {', '.join(e.profiles)}: image '{e.image}' must be <repo>/<name>:<tag> "
                            "(or <repo>/<name> with an environment, whose pins give the tag)")
        name = m["name"]
        dockerfile = name if name in available else GENERIC
        if dockerfile not in available:
            raise PlanError(f"profile(s) {', '.join(e.profiles)}: no images/{name}/Dockerfile for '{e.image}'")
        if dockerfile == GENERIC and e.spec is None:
            raise PlanError(f"profile(s) {', '.join(e.profiles)}: '{e.image}' has no images/{name}/Dockerfile "
                            "and no environment to install in images/env")
        if name in steps:
            raise PlanError(f"images/{name} is named with two tags: {steps[name].image} and {e.image}; "
                            "profiles using one image must name the same tag")
        steps[name] = Step(name, e.image, {"VERSION": m["tag"]}, e.profiles, dockerfile, e.spec)
    if BASE not in steps:
        raise PlanError("no profile uses the base image (gpulab/base): its pins come from that profile")
    base = steps[BASE]
    out = [Step(BASE, base.image, {**base.build_args, "BASE_IMAGE": base_image}, base.profiles, base.dockerfile, base.spec)]
    out += [Step(s.name, s.image, {**s.build_args, "GPULAB_BASE": base.image}, s.profiles, s.dockerfile, s.spec)
            for n, s in sorted(steps.items()) if n != BASE]
    if only:
        unknown = only - set(steps)
        if unknown:
            raise PlanError(f"--only: unknown image(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(steps))})")
        out = [s for s in out if s.name in only]
    return out


def context_tar(step: Step, uv: str | None) -> io.BytesIO:
    """The build context: the Dockerfile's directory, plus the installer, the pins (env.json)
    and the pinned uv binary, so the image is made exactly like a local environment."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(step.context.iterdir()):
            tar.add(str(path), arcname=path.name)
        tar.add(str(INSTALLER), arcname="install.py")
        data = json.dumps(step.spec or {}, indent=1).encode()
        info = tarfile.TarInfo("env.json")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        if uv:
            tar.add(uv, arcname="uv")
    buf.seek(0)
    return buf


def dockerfiles() -> set[str]:
    return {p.parent.name for p in HERE.glob("*/Dockerfile")}


def build(client, step: Step, uv: str | None = None, log=print) -> float:
    """Build one image with the engine's API (host network: RUN steps reach PyPI without a bridge)."""
    t0 = time.monotonic()
    log(f"building {step.image} from images/{step.dockerfile or step.name} "
        f"({', '.join(f'{k}={v}' for k, v in step.build_args.items())})")
    tail: list[str] = []
    for chunk in client.api.build(fileobj=context_tar(step, uv), custom_context=True, tag=step.image,
                                  buildargs=step.build_args, network_mode="host", rm=True, forcerm=True,
                                  decode=True):
        if "error" in chunk:
            raise RuntimeError(f"building {step.image} failed: {chunk['error'].strip()}\n" + "".join(tail[-30:]))
        text = chunk.get("stream", "")
        if text:
            tail.append(text)
            if text.startswith("Step ") or text.startswith("install.py:"):
                log("  " + text.strip())
    took = time.monotonic() - t0
    log(f"built {step.image} in {took:.0f} s")
    return took


def ensure_rootfs(client, name: str = ROOTFS_IMAGE) -> None:
    import docker

    try:
        client.images.get(name)
        return
    except docker.errors.ImageNotFound:
        pass
    # rootfs.sh talks to the same engine (DOCKER_HOST is inherited)
    subprocess.run([str(HERE / "rootfs.sh"), name], check=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default=str(ROOT / "profiles"), help="profiles directory")
    ap.add_argument("--only", default="", help="comma-separated images/ names (e.g. base,pytorch)")
    ap.add_argument("--base-image", default=REGISTRY_BASE_IMAGE, help="FROM of images/base")
    ap.add_argument("--rootfs", action="store_true",
                    help=f"no registry: build {ROOTFS_IMAGE} with debootstrap (images/rootfs.sh) and use it as the base")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    base_image = ROOTFS_IMAGE if args.rootfs else args.base_image
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    try:
        steps = plan(profile_images(Path(args.profiles)), dockerfiles(), base_image, only)
    except PlanError as e:
        print(f"images: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for s in steps:
            print(f"{s.image:40} images/{(s.dockerfile or s.name):8} {s.build_args} (profiles: {', '.join(s.profiles)})")
        return 0
    import docker

    sys.path.insert(0, str(ROOT))
    from hub_plugins.envs.manager import find_uv

    client = docker.from_env(timeout=1800)
    if args.rootfs:
        ensure_rootfs(client)
    base = plan(profile_images(Path(args.profiles)), dockerfiles(), base_image, {BASE})[0]
    if base not in steps and not _present(client, base.image):
        steps.insert(0, base)  # the others build FROM it
    uv = find_uv()
    for s in steps:
        build(client, s, uv)
    return 0


def _present(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


if __name__ == "__main__":
    sys.exit(main())
