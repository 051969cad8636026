"""The real-hardware check's CPU path (no GPU here): the same script as on a GPU machine, through
a real hub and the real PyTorch environment; the GPU-only checks say they were skipped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.hubproc import ROOT, TEST_ENVS_DIR

pytestmark = [pytest.mark.hub, pytest.mark.envs, pytest.mark.slow]


def test_gpu_check_cpu_path(pytorch_env, tmp_path):
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--no-build", "--envs-dir", TEST_ENVS_DIR,
                        "--report", str(report)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    checks = {c["check"]: c for c in json.loads(report.read_text())["checks"]}
    nvml = checks["NVML inventory vs nvidia-smi -L"]
    assert nvml["result"] == "skipped" and nvml["detail"].startswith("NVML found no GPU"), nvml
    torch = checks["PyTorch server with 1 GPU (CPU path)"]
    assert torch["result"] == "pass" and "CUDA_VISIBLE_DEVICES=0 (allocated ['0'])" in torch["detail"], torch
    assert checks["matmul loop in the culler's samples"]["result"] == "skipped"
    assert checks["a server without GPUs"]["result"] == "skipped"
    # two PyTorch servers on one shared GPU: both on GPU 0, the startup hook in each kernel, and
    # the real PyTorch holding the memory fraction for its CUDA initialisation
    shared = checks["two servers on one shared GPU (CPU path)"]
    assert shared["result"] == "pass" and "hook AfterImport" in shared["detail"], shared
    assert checks["PyTorch's memory fraction queued for its CUDA init (CPU path)"]["result"] == "pass"
    assert "gpu-check: " in r.stdout and " 0 failed" in r.stdout
