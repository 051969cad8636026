"""A stand-in for the ``pynvml`` module, at the hardware edge only (no GPU on CI machines).

It implements the NVML calls gpulab makes, with the same names, return shapes and error class,
for a described set of GPUs. Real NVML results recorded on a GPU host are in the README.
"""

from __future__ import annotations

from types import SimpleNamespace

NVML_DEVICE_MIG_ENABLE = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6


class NVMLError(Exception):
    """As pynvml's: ``value`` is the NVML return code (a text where no code matters here)."""

    def __init__(self, value=None):
        super().__init__(value)
        self.value = value


class NVMLError_LibraryNotFound(NVMLError):
    pass


class FakeNVML:
    """``gpus``: list of dicts {name, uuid, memory_mib, mig: None | [ {name, uuid, memory_mib}, ...],
    max_mig: 7, util: 0, power_w, processes, process_util}. ``fail_init``: raise like a host
    without a driver.

    Per-process data, as on a shared GPU: ``processes`` is a list of {pid, memory_mib, sm, mps}:
    processes with a CUDA context (``nvmlDeviceGetComputeRunningProcesses``; ``mps: True`` lists
    it as an MPS client instead, ``nvmlDeviceGetMPSComputeRunningProcesses``) and their SM
    utilisation samples (``sm``; None: no sample, as for a process that launched no kernel).
    Under MPS the driver attributes clients' work to the MPS server: give the server's pid the
    samples and the clients ``sm: None``. ``process_util: False``: per-process utilisation is
    not supported (NVML_ERROR_NOT_SUPPORTED)."""

    NVMLError = NVMLError
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE

    def __init__(self, gpus, fail_init: str | None = None):
        self.gpus = gpus
        self.fail_init = fail_init
        self.initialised = 0
        self.clock_us = 1_700_000_000_000_000  # CPU timestamps of samples, in microseconds

    def nvmlInit(self):
        if self.fail_init:
            raise NVMLError_LibraryNotFound(self.fail_init)
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def _dev(self, h):
        if h[0] == "gpu":
            return self.gpus[h[1]]
        return self.gpus[h[1]]["mig"][h[2]]

    def nvmlDeviceGetName(self, h):
        return self._dev(h)["name"]

    def nvmlDeviceGetUUID(self, h):
        return self._dev(h)["uuid"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=self._dev(h)["memory_mib"] * 1024 * 1024, used=0)

    def nvmlDeviceGetMigMode(self, h):
        g = self.gpus[h[1]]
        if "mig" not in g:
            raise NVMLError("Not Supported")
        on = g["mig"] is not None
        return (NVML_DEVICE_MIG_ENABLE if on else NVML_DEVICE_MIG_DISABLE,) * 2

    def nvmlDeviceGetMaxMigDeviceCount(self, h):
        return self.gpus[h[1]].get("max_mig", 7)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, slot):
        migs = self.gpus[h[1]]["mig"] or []
        if slot >= len(migs) or migs[slot] is None:
            raise NVMLError("Not Found")
        return ("mig", h[1], slot)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self._dev(h).get("util", 0), memory=0)

    def nvmlDeviceGetPowerUsage(self, h):
        power = self._dev(h).get("power_w")
        if power is None:
            raise NVMLError("Not Supported")
        return int(power * 1000)  # milliwatts, as NVML reports

    # -- per process ----------------------------------------------------------------------------
    def _processes(self, h, mps: bool):
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=int(p.get("memory_mib", 0) * 2**20),
                                gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
                for p in self._dev(h).get("processes", []) if bool(p.get("mps")) == mps]

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return self._processes(h, mps=False)

    def nvmlDeviceGetMPSComputeRunningProcesses(self, h):
        return self._processes(h, mps=True)

    def nvmlDeviceGetProcessUtilization(self, h, last_seen_us):
        """Samples newer than ``last_seen_us``: one per process that ran kernels since the last
        call (each call is a new sampling period)."""
        dev = self._dev(h)
        if not dev.get("process_util", True):
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        self.clock_us += 1_000_000
        out = [SimpleNamespace(pid=p["pid"], timeStamp=self.clock_us, smUtil=int(p["sm"]), memUtil=0, encUtil=0,
                               decUtil=0)
               for p in dev.get("processes", []) if p.get("sm") is not None and self.clock_us > last_seen_us]
        if not out:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return out
