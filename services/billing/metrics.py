"""Prometheus metrics, computed from gpulab's tables at each scrape (so they survive restarts
and agree with the usage pages): GPUs total/allocated by type (devices, and GPU-equivalents: a
share of a GPU shared by N is 1/N), shares per shared GPU, GPUs per user, GPU-seconds per user,
each running server's GPU efficiency (measured per server, also on shared GPUs), borrowed GPUs,
queue length and wait, refusals, culls (reclaims of borrowed servers included), accounting
fail-opens."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from hub_plugins.store import settled
from hub_plugins.store.usage import as_usage

WAIT_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class _Collector:
    def __init__(self, data, now: dt.datetime):
        self.data, self.now = data, now

    def collect(self):
        core, now = self.data.core, self.now
        snap = core.allocator.snapshot()
        total = GaugeMetricFamily("gpulab_gpus_total", "Allocatable devices by GPU type", labels=["gpu_type"])
        alloc = GaugeMetricFamily("gpulab_gpus_allocated", "Allocated devices by GPU type", labels=["gpu_type"])
        eq_total = GaugeMetricFamily("gpulab_gpu_equivalents_total",
                                     "GPU-equivalents by GPU type (a share of a GPU shared by N counts 1/N)",
                                     labels=["gpu_type"])
        eq_alloc = GaugeMetricFamily("gpulab_gpu_equivalents_allocated", "Allocated GPU-equivalents by GPU type",
                                     labels=["gpu_type"])
        shares = GaugeMetricFamily("gpulab_shares_per_gpu", "Servers that share one GPU of a shared type",
                                   labels=["gpu_type"])
        for a in core.availability(snap):
            total.add_metric([a.gpu_type], a.total)
            alloc.add_metric([a.gpu_type], a.total - a.free)
            eq_total.add_metric([a.gpu_type], float(a.weight * a.total))
            eq_alloc.add_metric([a.gpu_type], float(a.weight * (a.total - a.free)))
            if a.kind == "shared":
                shares.add_metric([a.gpu_type], int(1 / a.weight))
        yield from (total, alloc, eq_total, eq_alloc, shares)
        per_user: dict[str, float] = {}
        for s in snap.servers:
            per_user[s.user_name] = per_user.get(s.user_name, 0.0) + float(Fraction(s.equivalents))
        g = GaugeMetricFamily("gpulab_user_gpus_allocated", "GPU-equivalents held now", labels=["user"])
        for user, v in sorted(per_user.items()):
            g.add_metric([user], v)
        yield g
        # borrowed servers (beyond quota, preemptible): what a request within quota could take back
        borrowed: dict[str, float] = {t: 0.0 for t in core.inventory().types}
        for s in snap.servers:
            if s.borrowed and s.gpu_type:
                borrowed[s.gpu_type] = borrowed.get(s.gpu_type, 0.0) + float(Fraction(s.equivalents))
        b = GaugeMetricFamily("gpulab_gpus_borrowed",
                              "GPU-equivalents held by borrowed (preemptible, beyond quota) servers, by GPU type",
                              labels=["gpu_type"])
        for gpu_type, v in sorted(borrowed.items()):
            b.add_metric([gpu_type], v)
        yield b

        eff = GaugeMetricFamily("gpulab_server_gpu_efficiency_percent",
                                "Mean GPU utilisation of each running GPU server so far, of what it holds "
                                "(on a shared GPU: its own processes, of its share)",
                                labels=["user", "server", "gpu_type"])
        for r in core.usage.records(open_only=True):
            if r.gpu_count and r.util_samples:
                eff.add_metric([r.user_name, r.server_name, r.gpu_type], r.util_sum / r.util_samples)
        yield eff

        # settled records are summed by the database; running (and not yet settled) ones here,
        # by the same rule: a scrape does not read a year of records
        self.data.settle()
        sums, rest = settled.charged_by_user(core.db)
        seconds = {user: g for user, (g, _c) in sums.items()}
        cost = {user: c for user, (_g, c) in sums.items()}
        for r in rest:
            ch = as_usage(r).charge(now)
            seconds[r.user_name] = seconds.get(r.user_name, 0.0) + ch.gpu_seconds
            cost[r.user_name] = cost.get(r.user_name, 0.0) + ch.cost
        c = CounterMetricFamily("gpulab_gpu_seconds", "GPU-equivalent-seconds used (running servers included)",
                                labels=["user"])
        m = CounterMetricFamily("gpulab_cost", f"Cost in {core.pricing.currency}", labels=["user"])
        for user in sorted(seconds):
            c.add_metric([user], seconds[user])
            m.add_metric([user], cost[user])
        yield c
        yield m

        queue = core.queue.ordered()
        yield GaugeMetricFamily("gpulab_queue_length", "Requests waiting for GPUs", value=len(queue))
        waits = core.usage.event_values("dequeued")
        buckets, acc = [], 0
        for b in WAIT_BUCKETS:
            acc = sum(1 for w in waits if w <= b)
            buckets.append((str(b), acc))
        buckets.append(("+Inf", len(waits)))
        yield HistogramMetricFamily("gpulab_queue_wait_seconds", "Time requests waited in the queue",
                                    buckets=buckets, sum_value=sum(waits))

        refused = CounterMetricFamily("gpulab_spawn_refusals", "Spawns refused, by reason", labels=["reason"])
        counts = core.usage.event_counts("refused")
        for reason in ("quota", "capacity", "budget", "borrow"):
            refused.add_metric([reason], counts.get(reason, 0))
        yield refused
        culls = CounterMetricFamily("gpulab_culls", "Servers stopped by the culler, by reason", labels=["reason"])
        counts = core.usage.event_counts("culled")
        for reason in sorted(set(counts) | {"gpu_idle", "inactive", "max_age", "runtime", "budget", "external",
                                               "reclaim"}):
            culls.add_metric([reason], counts.get(reason, 0))
        yield culls
        yield CounterMetricFamily("gpulab_spawn_failures", "Servers that failed to start",
                                  value=core.usage.count_stopped("failed"))
        yield CounterMetricFamily("gpulab_accounting_fail_open",
                                  "Spawns let through while accounting was unavailable",
                                  value=sum(core.usage.event_counts("fail_open").values()))


def metrics_text(data, now: dt.datetime) -> bytes:
    reg = CollectorRegistry()
    reg.register(_Collector(data, now))
    return generate_latest(reg)
