"""A stand-in for the ``pynvml`` module, at the hardware edge only (no GPU on CI machines).

It implements the NVML calls gpulab makes, with the same names, return shapes and error class,
for a described set of GPUs. Real NVML results recorded on a GPU host are in the README.
"""

from __future__ import annotations

from types import SimpleNamespace

NVML_DEVICE_MIG_ENABLE = 1
NVML_DEVICE_MIG_DISABLE = 0


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class FakeNVML:
    """``gpus``: list of dicts {name, uuid, memory_mib, mig: None | [ {name, uuid, memory_mib}, ...],
    max_mig: 7, util: 0}. ``fail_init``: raise like a host without a driver."""

    NVMLError = NVMLError
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE

    def __init__(self, gpus, fail_init: str | None = None):
        self.gpus = gpus
        self.fail_init = fail_init
        self.initialised = 0

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
