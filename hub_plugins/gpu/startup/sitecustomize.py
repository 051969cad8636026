"""gpulab: hold each Python process of a server on a shared GPU to its share of the GPU's memory.

This directory is put first on ``PYTHONPATH`` of servers that hold shares of a shared GPU, so
Python imports this file at the start of every process of the server (kernels, terminals'
``python train.py``, DataLoader workers). It reads the variables gpulab set for the server:

- ``GPULAB_GPU_MEMORY_FRACTION`` (e.g. ``0.2464``): applied to PyTorch as its per-process memory
  fraction (``torch.cuda.set_per_process_memory_fraction``), queued to run when PyTorch first
  initialises CUDA, so importing torch stays as cheap as ever and CUDA is never touched early;
- ``GPULAB_GPU_MEMORY_LIMIT_MIB``: applied to TensorFlow as a logical device with that memory
  limit, right after ``import tensorflow`` (before TensorFlow opens the GPU);
- JAX reads ``XLA_PYTHON_CLIENT_MEM_FRACTION`` itself (gpulab sets it too).

**Cooperative**: it caps what these frameworks allocate on their own. A program can lift it
(``set_per_process_memory_fraction(1.0)``), unset the variables, or allocate through another
library; nothing here is enforced by the driver. Where a backend enforces more (MPS' pinned
memory limit on Docker), that is done outside the process. Self-contained on purpose: it runs
in the server's environment, where gpulab itself is not installed. Any other
``sitecustomize`` further on ``sys.path`` is still run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings

FRACTION = "GPULAB_GPU_MEMORY_FRACTION"
LIMIT_MIB = "GPULAB_GPU_MEMORY_LIMIT_MIB"


def caps_from_env(environ) -> tuple[float, int] | None:
    """(memory fraction, memory limit in MiB) from the server's variables; None when unset or
    malformed (a cap that cannot be read is not applied rather than breaking every process)."""
    try:
        fraction = float(environ[FRACTION])
        limit = int(environ.get(LIMIT_MIB) or 0)
    except (KeyError, ValueError):
        return None
    if not 0 < fraction <= 1 or limit < 0:
        return None
    return fraction, limit


def _warn(what: str, err: Exception) -> None:
    warnings.warn(f"gpulab: could not apply this server's GPU memory share to {what}: {err}", stacklevel=2)


def cap_torch(torch, fraction: float) -> None:
    """Queue the memory fraction for PyTorch's lazy CUDA initialisation (the same queue torch
    uses for seeds), or apply it now if CUDA is already up."""
    cuda = torch.cuda

    def apply():
        try:
            for i in range(cuda.device_count()):
                cuda.set_per_process_memory_fraction(fraction, i)
        except Exception as e:  # an error here must not break the user's CUDA initialisation
            _warn("PyTorch", e)

    lazy = getattr(cuda, "_lazy_call", None)
    if lazy is not None:
        lazy(apply)
    elif cuda.is_initialized():
        apply()


def cap_tensorflow(tf, limit_mib: int) -> None:
    if not limit_mib:
        return
    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_mib)])
    except Exception as e:  # e.g. the program configured its GPUs itself first
        _warn("TensorFlow", e)


class AfterImport:
    """A ``sys.meta_path`` finder that runs ``hooks[name](module)`` once that module has been
    imported, without importing it early: it finds the module's spec with the other finders and
    wraps that spec's loader's ``exec_module`` (loaders are per module, so nothing else changes)."""

    def __init__(self, hooks: dict):
        self.hooks = dict(hooks)

    def find_spec(self, name, path, target=None):
        hook = self.hooks.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        self.hooks.pop(name)
        run = loader.exec_module

        def exec_module(module):
            run(module)
            try:
                hook(module)
            except Exception as e:
                _warn(name, e)

        loader.exec_module = exec_module
        return spec


def install(environ=os.environ) -> AfterImport | None:
    caps = caps_from_env(environ)
    if caps is None:
        return None
    fraction, limit = caps
    finder = AfterImport({
        "torch": lambda m: cap_torch(m, fraction),
        "tensorflow": lambda m: cap_tensorflow(m, limit),
    })
    sys.meta_path.insert(0, finder)
    return finder


def chain() -> None:
    """Run the next ``sitecustomize.py`` on sys.path (the environment's own), as Python would
    have without this one."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.getcwd())
        candidate = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_gpulab_next_sitecustomize", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


if __name__ == "sitecustomize":  # imported by Python at start-up (not by gpulab's own tests)
    try:
        install()
    finally:
        chain()
