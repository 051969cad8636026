"""The culler's loop (I/O): gather servers, activity and GPU samples, ask the pure module
(``decide``) what each measurement means and what to do, act through the hub's API, and write
only through the store (``store/samples.py``, ``store/usage.py``).

Each round it also records utilisation, efficiency and energy on the usage records, runs the
queue's keeper (``keeper.py``), takes back borrowed servers (``reclaim.py``) and notes budgets nearly spent (``budget_notes.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from hub_plugins.gpu.metrics import make_reader
from hub_plugins.settings.live import LiveSettings
from hub_plugins.settings.typed import Settings, plain
from hub_plugins.spawners.local.sysusers import system_username
from hub_plugins.store import settled
from hub_plugins.store.samples import Measured, SampleStore
from hub_plugins.store.usage import aware
from services.base import HubAPIError

from . import keeper
from .budget_notes import budget_notes
from .cpu import CpuTracker
from .reclaim import reclaim_round
from .decide import Action, Server
from .decide import Settings as CullSettings
from .decide import STOP_CATEGORY, allocated_fraction, decide, energy_wh, gpu_idle, kept_alive, spent_since

log = logging.getLogger("gpulab.culler")
UTC = dt.timezone.utc
RELOOK_SECONDS = 5.0  # how soon a reloaded interval takes effect while the culler waits


def parse_time(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class Culler:
    def __init__(self, live: LiveSettings, core, hub):
        self.core, self.hub, self.live = core, hub, live
        settings = live.current
        self.local = settings.local if settings.backend == "local" else None
        self._policies: tuple[Settings, CullSettings] | None = None
        m = settings.culler["metrics"]  # the metrics source is read once (a restart changes it)
        self.reader = make_reader(m["source"], settings.inventory,
                                  m["simulated_file"] or os.path.join(settings.state_dir, "simulated-gpu-metrics.json"),
                                  m["prometheus_url"])
        self.cpu = CpuTracker(self.settings.cpu_idle_threshold) if self.local else None
        self.samples = SampleStore(core.db)
        self.budget_spent: dict[str, dt.datetime] = {}
        self.kept_until: dict[tuple[str, str], dt.datetime] = {}  # the last round a keep-alive held it
        self.last_round: float | None = None

    # -- the running settings (gpulab.yaml reloads: policies, thresholds, webhooks, queue) -----
    @property
    def conf(self):
        return self.live.current.culler

    @property
    def settings(self) -> CullSettings:
        """The cull policies of the running settings (rebuilt only when they change)."""
        running = self.live.current
        if self._policies is None or self._policies[0] is not running:
            self._policies = (running, CullSettings.from_config(plain(running.culler), plain(running.raw["budgets"])))
        return self._policies[1]

    @property
    def lost_after(self):
        return self.live.current.core.queue.policy.stale_after

    # -- one round ---------------------------------------------------------------------------
    async def run_once(self) -> list[Action]:
        now = dt.datetime.now(UTC)
        interval = time.monotonic() - self.last_round if self.last_round else self.conf["interval_seconds"]
        self.last_round = time.monotonic()
        users = await self.hub.users(state="active")
        if self.cpu is not None:
            self.cpu.threshold = self.settings.cpu_idle_threshold  # as the running settings say
        servers = await asyncio.to_thread(self._gather, users, now, interval)
        actions = decide(servers, self.settings, now, allocated_fraction(self.core.availability()))
        for a in actions:
            await self._act(a, users)
        await keeper.restart_lost(self.hub, self.core.queue, users, now, self.lost_after)
        try:
            actions += await reclaim_round(self, users, now)
        except Exception:  # the budget notes and pruning below still run this round
            log.exception("reclaiming borrowed servers failed; trying again next round")
        await budget_notes(self.core, self.live, users, now)
        await asyncio.to_thread(self.samples.prune, now - dt.timedelta(hours=float(self.conf["keep_samples_hours"])))
        # the charges of records closed since (the billing service settles too; this keeps the
        # queue's fair share and the sums quick on a hub whose billing pages nobody opens)
        await asyncio.to_thread(settled.settle, self.core.db)
        return actions

    def _gather(self, users, now, interval) -> list[Server]:
        core = self.core
        devices_of = {sid: devs for sid, (_s, devs) in core.allocator.holdings().items()}
        inv = {d.key: d for d in core.inventory().devices}
        records = {(r.user_name, r.server_name): r for r in core.usage.records(open_only=True)}
        held = [inv[d.device_key] for devs in devices_of.values() for d in devs if d.device_key in inv]
        # who holds each device: a shared GPU's shares are measured per holder, not per GPU
        holders = {d.device_key: sid for sid, devs in devices_of.items() for d in devs}
        samples = self.reader.read(held, holders) if held else {}
        if self.cpu is not None:
            self.cpu.sample(now)  # once a round: it reads every process on the host
        servers, measured = [], []
        for u in users:
            for name, s in (u.get("servers") or {}).items():
                if not s.get("ready"):
                    continue
                rec = records.get((u["name"], name))
                keys = [d.device_key for d in devices_of.get(rec.spawn_id, [])] if rec else []
                utils = [samples[k].util if k in samples else None for k in keys]
                known, idle_since = gpu_idle(utils, self.settings.gpu_idle_threshold,
                                             aware(rec.idle_since) if rec else None, now)
                if rec and known:
                    measured.append(Measured(rec.id, sum(utils) / len(utils), idle_since,
                                             energy_wh([samples[k].power_w for k in keys], interval)))
                groups = tuple(u.get("groups") or ())
                servers.append(Server(
                    user=u["name"], name=name, profile=rec.profile if rec else "", groups=groups,
                    gpu_count=rec.gpu_count if rec else 0,
                    ready_at=aware(rec.ready_at) if rec and rec.ready_at else parse_time(s.get("started")),
                    last_activity=parse_time(s.get("last_activity")),
                    cpu_busy_at=self.cpu.busy_at(u["name"], name) if self.cpu else None,
                    gpu_idle_since=idle_since, gpu_samples=known,
                    keep_alive_at=self._keep_alive(u["name"]), kept_until=self.kept_until.get((u["name"], name)),
                    runtime_limit=dt.timedelta(seconds=rec.runtime_limit_s) if rec and rec.runtime_limit_s else None,
                    budget_spent_since=self._budget_spent_since(rec, u["name"], groups, now),
                    warned=rec.warned if rec else "",
                ))
        self.samples.record(samples, measured, now)
        # remembered for the next rounds (in memory: a restarted culler starts the clocks anew)
        self.kept_until = {(s.user, s.name): now if kept_alive(s, self.settings, now) else s.kept_until
                           for s in servers if s.kept_until or kept_alive(s, self.settings, now)}
        return servers

    def _budget_spent_since(self, rec, user: str, groups, now) -> dt.datetime | None:
        """Since when the budget this server is charged to (its project's, or its user's own)
        has been spent; only read when budgets are enforced on running servers."""
        if self.settings.budget_grace is None or not rec or not rec.gpu_count:
            return None
        budgets = self.core.budget_keeper
        if rec.project:
            key, status = f"project:{rec.project}", budgets.project(rec.project, now)
        else:
            limit = self.core.effective(user, groups, now).limits.budget
            key, status = user, budgets.personal(user, limit, now)
        since = spent_since(self.budget_spent.get(key), status.spent, now)
        if since is None:
            self.budget_spent.pop(key, None)
        else:
            self.budget_spent[key] = since
        return since

    def _keep_alive(self, user: str) -> dt.datetime | None:
        """mtime of the user's ``~/.keep-alive`` (local backend: we know where homes are)."""
        if self.local is None:
            return None
        home = self.local.home(system_username(user, self.local.system_user_prefix))
        try:
            return dt.datetime.fromtimestamp(os.stat(os.path.join(home, ".keep-alive")).st_mtime, UTC)
        except OSError:
            return None

    # -- acting ------------------------------------------------------------------------------
    async def _act(self, a: Action, users) -> None:
        usage = self.core.usage
        if a.kind == "warn":
            log.info("warning %s:%s: %s", a.user, a.server, a.message)
            await asyncio.to_thread(self.samples.set_warned, a.user, a.server, a.tag)
            await asyncio.to_thread(usage.event, "warned", a.reason, a.user, a.server, a.message, a.minutes_left)
            await self._webhook(a, users)
            return
        log.warning("culling %s:%s: %s", a.user, a.server, a.message)
        await asyncio.to_thread(usage.set_pending_reason, a.user, a.server, f"{STOP_CATEGORY[a.reason]}: {a.message}")
        await asyncio.to_thread(usage.event, "culled", a.reason, a.user, a.server, a.message)
        await self._webhook(a, users)
        try:
            await self.hub.stop(a.user, a.server)
        except HubAPIError as e:
            log.error("could not stop %s:%s: %s", a.user, a.server, e)

    def webhook_for(self, user: str, groups) -> str | None:
        hooks = self.conf["webhooks"]
        if user in hooks["users"]:
            return hooks["users"][user]
        for g in groups:
            if g in hooks["groups"]:
                return hooks["groups"][g]
        return hooks["default"]

    async def _webhook(self, a: Action, users) -> None:
        groups = next((u.get("groups") or [] for u in users if u["name"] == a.user), [])
        url = self.webhook_for(a.user, groups)
        if not url:
            return
        body = {"user": a.user, "server": a.server, "action": a.kind, "reason": a.reason,
                "minutes_left": round(a.minutes_left, 1), "message": a.message}
        try:
            await AsyncHTTPClient().fetch(HTTPRequest(url, method="POST", body=json.dumps(body),
                                                      headers={"Content-Type": "application/json"},
                                                      request_timeout=5))
        except Exception as e:  # a broken webhook must not stop culling
            log.warning("webhook %s failed: %s", url, e)

    async def run_forever(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                actions = await self.run_once()
                # one line a round: how long it took is what an admin (and benchmarks/scale.py) reads
                log.info("cull round: %d actions in %.0f ms", len(actions), (time.monotonic() - t0) * 1000)
            except Exception:
                log.exception("cull round failed; trying again next round")
            await self.until_next_round(t0)

    async def until_next_round(self, t0: float) -> None:
        """Sleep out the round's interval, looking again every few seconds: an interval changed
        meanwhile (a reload) counts from the round's start. Sleeping the old interval whole, a
        culler given a long one by mistake stayed asleep after the fix."""
        await asyncio.sleep(0.5)
        while (left := self.conf["interval_seconds"] - (time.monotonic() - t0)) > 0:
            await asyncio.sleep(min(left, RELOOK_SECONDS))


__all__ = ["Culler"]
