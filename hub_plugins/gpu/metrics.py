"""Reading GPU utilisation, memory and power: the culler's and the usage pages' input.

Three sources behind one interface, ``reader.read(devices, holders) -> {device key: Sample}``
(``holders``: device key -> the spawn id holding it):

- ``nvml``: this host's GPUs through NVML (whole GPUs; NVML cannot report utilisation of a MIG
  instance, so those read as unknown). The shares of a shared GPU are read per process and
  attributed to the server holding each (``attribution.py``, ``procs.py``): a share's sample is
  its holder's, not the GPU's;
- ``simulated``: a JSON file, ``{"<device key or visible id>": {"util": 37, "power_w": 210}}``,
  for simulated inventories (tests and demos set it);
- ``prometheus``: a DCGM exporter scraped by Prometheus (``DCGM_FI_DEV_GPU_UTIL``,
  ``DCGM_FI_DEV_POWER_USAGE``, ``DCGM_FI_DEV_FB_USED`` by GPU UUID), for clusters.

An unknown value is ``None``: the culler never treats "cannot measure" as "idle".
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .attribution import GpuProcess, GpuReading, attribute, holders_by_gpu
from .devices import Device
from .procs import owners

log = logging.getLogger("gpulab.metrics")


@dataclass(frozen=True)
class Sample:
    util: float | None = None  # percent
    memory_used_mib: float | None = None
    power_w: float | None = None


class SimulatedReader:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self, devices: list[Device], holders=None) -> dict[str, Sample]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = {}
        out = {}
        for d in devices:
            v = data.get(d.key, data.get(d.visible_id, data.get("*")))
            if isinstance(v, (int, float)):
                v = {"util": v}
            v = v or {}
            out[d.key] = Sample(v.get("util"), v.get("memory_used_mib"), v.get("power_w"))
        return out


NOT_FOUND = 6  # NVML_ERROR_NOT_FOUND: no per-process sample in the window (nobody computed)


class NVMLReader:
    def __init__(self, nvml=None, proc: str = "/proc"):
        if nvml is None:
            import pynvml as nvml
        self.nvml = nvml
        self.proc = proc
        self._seen: dict[int, int] = {}  # GPU index -> the last per-process sample's timestamp (µs)

    def read(self, devices: list[Device], holders=None) -> dict[str, Sample]:
        nv = self.nvml
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            log.warning("NVML unavailable (%s): no GPU samples", e)
            return {d.key: Sample() for d in devices}
        out = {}
        try:
            out.update(self._shared(devices, holders or {}))
            for d in devices:
                if d.key in out:
                    continue
                if d.kind == "mig":
                    out[d.key] = Sample()  # NVML has no per-instance utilisation (DCGM has)
                    continue
                try:
                    h = nv.nvmlDeviceGetHandleByIndex(d.index)
                    util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                    mem = nv.nvmlDeviceGetMemoryInfo(h).used / 2**20
                    try:
                        power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
                    except nv.NVMLError:
                        power = None
                    out[d.key] = Sample(util, mem, power)
                except nv.NVMLError as e:
                    log.warning("NVML sample of %s failed: %s", d.key, e)
                    out[d.key] = Sample()
        finally:
            nv.nvmlShutdown()
        return out

    # -- shared GPUs: per process, per server ----------------------------------------------------
    def _shared(self, devices: list[Device], holders) -> dict[str, Sample]:
        out: dict[str, Sample] = {}
        for (_host, index), held in holders_by_gpu(devices, holders).items():
            try:
                reading = self._reading(index)
            except self.nvml.NVMLError as e:
                log.warning("NVML per-process reading of GPU %s failed: %s", index, e)
                continue  # its shares read as unknown below
            shares = attribute(reading, owners([p.pid for p in reading.processes], self.proc), held)
            for d in devices:
                spawn = holders.get(d.key)
                if d.kind == "shared" and d.index == index and spawn in shares:
                    sh, k = shares[spawn], held[spawn] / d.weight  # k: how many of its shares
                    out[d.key] = Sample(sh.util, sh.memory_used_mib / float(k),
                                        None if sh.power_w is None else sh.power_w / float(k))
        for d in devices:
            if d.kind == "shared" and d.key not in out:
                out[d.key] = Sample()  # held by no server, or unreadable: unknown, never idle
        return out

    def _reading(self, index: int) -> GpuReading:
        nv = self.nvml
        h = nv.nvmlDeviceGetHandleByIndex(index)
        util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
        try:
            power = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
        except nv.NVMLError:
            power = None
        memory: dict[int, float | None] = {}
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetMPSComputeRunningProcesses"):
            try:
                for p in getattr(nv, fn)(h):
                    used = getattr(p, "usedGpuMemory", None)
                    memory[p.pid] = used / 2**20 if isinstance(used, int) and used >= 0 else None
            except (nv.NVMLError, AttributeError):
                continue  # MPS clients are listed only where MPS runs
        sm: dict[int, list[float]] = {}
        samples = True
        try:
            for smp in nv.nvmlDeviceGetProcessUtilization(h, self._seen.get(index, 0)):
                sm.setdefault(smp.pid, []).append(float(smp.smUtil))
                self._seen[index] = max(self._seen.get(index, 0), int(smp.timeStamp))
        except nv.NVMLError as e:
            samples = getattr(e, "value", None) == NOT_FOUND
        procs = tuple(GpuProcess(pid, memory.get(pid), sum(v) / len(v) if (v := sm.get(pid)) else None)
                      for pid in sorted(set(memory) | set(sm)))
        return GpuReading(util, power, procs, samples)


class PrometheusReader:
    QUERIES = {"util": "DCGM_FI_DEV_GPU_UTIL", "power_w": "DCGM_FI_DEV_POWER_USAGE",
               "memory_used_mib": "DCGM_FI_DEV_FB_USED"}

    def __init__(self, url: str, fetch=None):
        self.url = url.rstrip("/")
        self.fetch = fetch or self._http

    def _http(self, query: str) -> dict:
        q = urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())

    @staticmethod
    def parse(response: dict) -> dict[str, float]:
        """{GPU UUID: value} from a Prometheus instant-query response (whole GPUs only)."""
        out = {}
        for item in (response.get("data") or {}).get("result") or []:
            labels = item.get("metric") or {}
            if labels.get("GPU_I_ID"):  # a MIG instance: not mapped to our devices yet
                continue
            uuid = labels.get("UUID") or labels.get("uuid")
            try:
                out[uuid] = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
        return out

    def read(self, devices: list[Device], holders=None) -> dict[str, Sample]:
        values = {}
        for field, metric in self.QUERIES.items():
            try:
                values[field] = self.parse(self.fetch(metric))
            except Exception as e:  # a metrics outage must not crash the culler
                log.warning("Prometheus query %s failed: %s", metric, e)
                values[field] = {}
        return {d.key: Sample(**{f: values[f].get(d.uuid) for f in self.QUERIES}) for d in devices}


def make_reader(source: str, inventory_spec: str, simulated_file: str, prometheus_url: str | None = None):
    """``source``: auto (simulated for a simulated inventory, else NVML) | nvml | simulated | prometheus."""
    if source == "prometheus":
        if not prometheus_url:
            raise ValueError("culler.metrics.prometheus_url is needed for source: prometheus")
        return PrometheusReader(prometheus_url)
    if source == "simulated" or (source == "auto" and inventory_spec != "auto"):
        return SimulatedReader(simulated_file)
    return NVMLReader()
