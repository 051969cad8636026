"""Build the profile images: ``make images`` (or ``python images/build.py``).

The tags come from ``profiles/*.yaml`` (each profile's ``image:``), the one source: the image
``gpulab/<name>:<tag>`` is built from ``images/<name>/Dockerfile`` with ``VERSION=<tag>``, and
the images built FROM the base get the base's tag from the profile that uses ``gpulab/base``.

    python images/build.py                      # every image the profiles name (registry: FROM python:3.11-slim)
    python images/build.py --only base          # just some of them
    python images/build.py --rootfs             # no registry: base FROM a debootstrap rootfs (images/rootfs.sh)
    python images/build.py --dry-run            # print the plan

The engine is the one ``DOCKER_HOST`` points at (default: the local socket).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE = "base"
ROOTFS_IMAGE = "gpulab/rootfs:bookworm"
REGISTRY_BASE_IMAGE = "python:3.11-slim-bookworm"
IMAGE_RE = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._/-]*?/(?P<name>[a-z0-9][a-z0-9._-]*)):(?P<tag>[A-Za-z0-9._-]+)$")


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    name: str  # images/<name>
    image: str  # repo:tag
    build_args: dict[str, str] = field(default_factory=dict)
    profiles: tuple[str, ...] = ()

    @property
    def context(self) -> Path:
        return HERE / self.name


def profile_images(profiles_dir: Path) -> dict[str, list[str]]:
    """image -> the profiles that use it, from ``profiles/*.yaml``."""
    import yaml

    out: dict[str, list[str]] = {}
    for path in sorted(Path(profiles_dir).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if data.get("image"):
            out.setdefault(data["image"], []).append(path.stem)
    return out


def plan(images: dict[str, list[str]], available: set[str], base_image: str,
         only: set[str] | None = None) -> list[Step]:
    """The builds, base first (pure). ``available``: the directories of images/ with a Dockerfile."""
    steps: dict[str, Step] = {}
    for image, profiles in sorted(images.items()):
        m = IMAGE_RE.match(image)
        if not m:
            raise PlanError(f"profile(s) {', '.join(profiles)}: image '{image}' must be <repo>/<name>:<tag>")
        name = m["name"]
        if name not in available:
            raise PlanError(f"profile(s) {', '.join(profiles)}: no images/{name}/Dockerfile for '{image}'")
        if name in steps:
            raise PlanError(f"images/{name} is named with two tags: {steps[name].image} and {image}; "
                            "profiles using one image must name the same tag")
        steps[name] = Step(name, image, {"VERSION": m["tag"]}, tuple(profiles))
    if BASE not in steps:
        raise PlanError("no profile uses the base image (gpulab/base:<tag>): its tag comes from that profile")
    base = steps[BASE]
    out = [Step(BASE, base.image, {**base.build_args, "BASE_IMAGE": base_image}, base.profiles)]
    out += [Step(s.name, s.image, {**s.build_args, "GPULAB_BASE": base.image}, s.profiles)
            for n, s in sorted(steps.items()) if n != BASE]
    if only:
        unknown = only - set(steps)
        if unknown:
            raise PlanError(f"--only: unknown image(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(steps))})")
        out = [s for s in out if s.name in only]
    return out


def dockerfiles() -> set[str]:
    return {p.parent.name for p in HERE.glob("*/Dockerfile")}


def build(client, step: Step, log=print) -> float:
    """Build one image with the engine's API (host network: RUN steps reach PyPI without a bridge)."""
    t0 = time.monotonic()
    log(f"building {step.image} from images/{step.name} ({', '.join(f'{k}={v}' for k, v in step.build_args.items())})")
    tail: list[str] = []
    for chunk in client.api.build(path=str(step.context), tag=step.image, buildargs=step.build_args,
                                  network_mode="host", rm=True, forcerm=True, decode=True):
        if "error" in chunk:
            raise RuntimeError(f"building {step.image} failed: {chunk['error'].strip()}\n" + "".join(tail[-30:]))
        text = chunk.get("stream", "")
        if text:
            tail.append(text)
            if text.startswith("Step "):
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
            print(f"{s.image:40} images/{s.name:12} {s.build_args} (profiles: {', '.join(s.profiles)})")
        return 0
    import docker

    client = docker.from_env(timeout=600)
    if args.rootfs:
        ensure_rootfs(client)
    for s in steps:
        build(client, s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
