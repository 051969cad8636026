"""A profile's environment: exact pins, the one source for the local environment, the Docker
image and the image tag the Helm values use (pure; no I/O).

The ``environment`` section of ``profiles/<name>.yaml``::

    environment:
      python: "3.11"                 # the system Python the venv is made from
      as_of: "2026-11-29"            # dependencies resolve as the registries stood that day
      version_of: torch              # whose version starts the image tag
      pip: [jupyterhub==6.1.1, torch==2.15.0, ...]     # exact pins (name==version)
      npm: {node: 24.9.0, code-server: 4.139.1}      # exact versions; 'node' is installed first

The stamp is a hash of all of it: an environment is rebuilt only when its stamp changes, its
directory is ``<dir>/<profile>-<stamp>`` (two pin sets never share one) and its image is tagged
``<version>-<stamp>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

# bumped when the builder's layout changes, so that every environment is rebuilt
LAYOUT = 1
STAMP_LENGTH = 10
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[A-Za-z0-9,._-]+\])?==(?P<version>[A-Za-z0-9.+!_-]+)$")
NPM_VERSION = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"
# what every environment must carry (checked for the shipped profiles by tests/unit/test_envs.py)
REQUIRED = ("jupyterhub", "jupyterlab", "mlflow-skinny", "jupyterlab-nvdashboard", "jupyter-resource-usage")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    extras: str = ""

    @classmethod
    def parse(cls, text: str) -> Pin:
        m = PIN.match(text.strip())
        if not m:
            raise ValueError(f"'{text}' is not an exact pin (name==version)")
        return cls(m["name"], m["version"], m["extras"] or "")

    @property
    def key(self) -> str:
        return canonical(self.name)

    def __str__(self) -> str:
        return f"{self.name}{self.extras}=={self.version}"


@dataclass(frozen=True)
class EnvSpec:
    profile: str
    python: str
    as_of: str
    version_of: str
    pip: tuple[Pin, ...]
    npm: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, profile: str, data: dict) -> EnvSpec:
        """From a profile's (schema-validated) ``environment`` section; ValueError says what is wrong."""
        pins = tuple(Pin.parse(p) for p in data["pip"])
        seen: set[str] = set()
        for p in pins:
            if p.key in seen:
                raise ValueError(f"pip: {p.name} is pinned twice")
            seen.add(p.key)
        npm = tuple(sorted((str(k), str(v)) for k, v in (data.get("npm") or {}).items()))
        spec = cls(profile, str(data.get("python", "3.11")), str(data["as_of"]),
                   str(data.get("version_of") or pins[0].name), pins, npm)
        if spec.version(spec.version_of) is None:
            raise ValueError(f"version_of: '{spec.version_of}' is not one of the pinned packages")
        if "jupyterhub" not in spec.pip_versions:
            raise ValueError("pip: must pin jupyterhub (servers run jupyterhub-singleuser; the hub's major version)")
        return spec

    # -- what it holds -----------------------------------------------------------------------
    @property
    def pip_versions(self) -> dict[str, str]:
        return {p.key: p.version for p in self.pip}

    @property
    def npm_versions(self) -> dict[str, str]:
        return dict(self.npm)

    def version(self, name: str) -> str | None:
        return self.pip_versions.get(canonical(name)) or self.npm_versions.get(name)

    def missing_required(self) -> list[str]:
        have = self.pip_versions
        return [r for r in REQUIRED if r not in have]

    # -- identity --------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """Everything the builder needs (and nothing else): the stamp is the hash of this."""
        return {
            "layout": LAYOUT,
            "profile": self.profile,
            "python": self.python,
            "as_of": self.as_of,
            "pip": sorted(str(p) for p in self.pip),
            "npm": dict(self.npm),
        }

    @property
    def stamp(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:STAMP_LENGTH]

    @property
    def dirname(self) -> str:
        """The environment's directory under environments.dir."""
        return f"{self.profile}-{self.stamp}"

    @property
    def tag(self) -> str:
        """The image tag: the named package's version, then the stamp (``2.15.0-1a2b3c4d5e``)."""
        return f"{self.version(self.version_of)}-{self.stamp}"

    def summary(self, names: tuple[str, ...] = ()) -> str:
        """'torch 2.15.0, torchvision 0.29.2' for the named packages (all pins if none named)."""
        names = names or tuple(p.name for p in self.pip) + tuple(n for n, _ in self.npm)
        return ", ".join(f"{n} {self.version(n)}" for n in names if self.version(n))


def image_ref(image: str, spec: EnvSpec | None) -> str:
    """A profile's ``image:``: a repository without a tag gets the environment's tag."""
    if not image or spec is None:
        return image
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        return image
    return f"{image}:{spec.tag}"
