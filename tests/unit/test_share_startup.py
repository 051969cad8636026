"""The startup hook sharers load (hub_plugins/gpu/startup/sitecustomize.py): what it reads, that it
hooks frameworks without importing them, and that the environment's own sitecustomize still runs.
Real interpreters, real imports; the frameworks' own side is checked on a GPU (tools/)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from hub_plugins.gpu.sharing import STARTUP_DIR

hook = importlib.import_module("hub_plugins.gpu.startup.sitecustomize")


@pytest.mark.parametrize(
    "env, caps",
    [
        ({"GPULAB_GPU_MEMORY_FRACTION": "0.2464", "GPULAB_GPU_MEMORY_LIMIT_MIB": "35584"}, (0.2464, 35584)),
        ({"GPULAB_GPU_MEMORY_FRACTION": "0.5"}, (0.5, 0)),
        ({}, None),
        ({"GPULAB_GPU_MEMORY_FRACTION": "lots"}, None),
        ({"GPULAB_GPU_MEMORY_FRACTION": "1.5"}, None),
        ({"GPULAB_GPU_MEMORY_FRACTION": "0"}, None),
        ({"GPULAB_GPU_MEMORY_FRACTION": "0.25", "GPULAB_GPU_MEMORY_LIMIT_MIB": "-1"}, None),
    ],
)
def test_caps_from_env(env, caps):
    assert hook.caps_from_env(env) == caps


def run(code: str, env: dict, *path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GPULAB_")}
    full.update(env, PYTHONPATH=os.pathsep.join([str(STARTUP_DIR), *map(str, path)]))
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60)


def test_python_loads_it_first_and_imports_no_framework():
    out = run("import sys, json, sitecustomize as s; f = sys.meta_path[0]; "
              "print(json.dumps([s.__file__, type(f).__name__, sorted(f.hooks), 'torch' in sys.modules]))",
              {"GPULAB_GPU_MEMORY_FRACTION": "0.25", "GPULAB_GPU_MEMORY_LIMIT_MIB": "1024"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [str(STARTUP_DIR / "sitecustomize.py"), "AfterImport", ["tensorflow", "torch"], False]


def test_without_a_share_it_does_nothing():
    out = run("import sys; print(type(sys.meta_path[0]).__name__)", {})
    assert out.returncode == 0 and out.stdout.strip() != "AfterImport"


def test_the_environments_own_sitecustomize_still_runs(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import builtins\nbuiltins.ENV_SITE_RAN = True\n")
    out = run("import builtins; print(getattr(builtins, 'ENV_SITE_RAN', False))",
              {"GPULAB_GPU_MEMORY_FRACTION": "0.25"}, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_a_hook_runs_once_its_module_is_imported(tmp_path, monkeypatch):
    """The import machinery it relies on, with a real module: the hook sees the module after its
    body ran, once, and the module is not imported before the program asks for it."""
    (tmp_path / "gpulab_probe_mod").mkdir()
    (tmp_path / "gpulab_probe_mod" / "__init__.py").write_text("READY = 'body ran'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    finder = hook.AfterImport({"gpulab_probe_mod": lambda m: seen.append(m.READY)})
    sys.meta_path.insert(0, finder)
    try:
        assert "gpulab_probe_mod" not in sys.modules
        import gpulab_probe_mod  # noqa: F401

        importlib.reload(gpulab_probe_mod)
        assert seen == ["body ran"] and finder.hooks == {}
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop("gpulab_probe_mod", None)

