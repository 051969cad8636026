"""The culler's loop (I/O): gather servers, activity and GPU samples, ask ``decide``, act.

Each round it also records utilisation, efficiency and energy on the usage records, and restarts
queued requests whose spawn was lost (a hub restart) so that they keep their place in the queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from pathlib import Path

import sqlalchemy as sa
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from hub_plugins.gpu.metrics import make_reader
from hub_plugins.spawners.sysusers import system_username
from hub_plugins.store.models import GPUSample, UsageRecord, utcnow
from hub_plugins.store.usage import aware, naive
from services.base import HubAPIError

from .cpu import CpuTracker
from .decide import Action, Server, Settings, decide

log = logging.getLogger("gpulab.culler")
UTC = dt.timezone.utc
STOP_CATEGORY = {"gpu_idle": "culled", "inactive": "culled", "max_age": "culled", "runtime": "runtime",
                 "budget": "budget"}


def parse_time(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class Culler:
    def __init__(self, cfg: dict, core, hub):
        self.cfg, self.core, self.hub = cfg, core, hub
        c = cfg["culler"]
        self.conf = c
        self.settings = Settings.from_config(c, cfg["budgets"])
        m = c.get("metrics") or {}
        self.reader = make_reader(m.get("source", "auto"), cfg["gpus"]["inventory"],
                                  m.get("simulated_file") or os.path.join(cfg["hub"]["state_dir"],
                                                                         "simulated-gpu-metrics.json"),
                                  m.get("prometheus_url"))
        self.cpu = CpuTracker(self.settings.cpu_idle_threshold) if cfg["backend"] == "local" else None
        self.budget_spent: dict[str, dt.datetime] = {}
        self.last_round: float | None = None

    # -- one round ---------------------------------------------------------------------------
    async def run_once(self) -> list[Action]:
        now = dt.datetime.now(UTC)
        interval = time.monotonic() - self.last_round if self.last_round else self.conf["interval_seconds"]
        self.last_round = time.monotonic()
        users = await self.hub.users(state="active")
        servers, samples = await asyncio.to_thread(self._gather, users, now, interval)
        inv_total = sum(a.total for a in self.core.availability())
        allocated = 1 - sum(a.free for a in self.core.availability()) / inv_total if inv_total else 0.0
        actions = decide(servers, self.settings, now, allocated)
        for a in actions:
            await self._act(a, users)
        await self._restart_lost_queue_requests(users, now)
        await asyncio.to_thread(self._prune, now)
        return actions

    def _gather(self, users, now, interval) -> tuple[list[Server], dict]:
        core = self.core
        holdings = core.allocator.holdings()
        devices_of = {sid: devs for sid, (_s, devs) in holdings.items()}
        inv = {d.key: d for d in core.inventory().devices}
        records = {(r.user_name, r.server_name): r for r in core.usage.records(open_only=True)}
        held = [inv[d.device_key] for devs in devices_of.values() for d in devs if d.device_key in inv]
        samples = self.reader.read(held) if held else {}
        keeper = core.budget_keeper
        servers, updates = [], []
        for u in users:
            for name, s in (u.get("servers") or {}).items():
                if not s.get("ready"):
                    continue
                rec = records.get((u["name"], name))
                keys = [d.device_key for d in devices_of.get(rec.spawn_id, [])] if rec else []
                utils = [samples[k].util for k in keys if k in samples]
                known = bool(keys) and len(utils) == len(keys) and all(x is not None for x in utils)
                idle_since = aware(rec.idle_since) if rec and rec.idle_since else None
                if rec and known:
                    busy = any(x >= self.settings.gpu_idle_threshold for x in utils)
                    idle_since = None if busy else (idle_since or now)
                    power = [samples[k].power_w for k in keys]
                    updates.append((rec.id, sum(utils) / len(utils), idle_since,
                                    sum(power) * interval / 3600 if all(p is not None for p in power) else 0.0))
                groups = tuple(u.get("groups") or ())
                budget_since = None
                if self.settings.budget_grace is not None and rec and rec.gpu_count:
                    # the budget the server is charged to: its project's, or its user's own
                    if rec.project:
                        key, status = f"project:{rec.project}", keeper.project(rec.project, now)
                    else:
                        limit = core.effective(u["name"], groups, now).limits.budget
                        key, status = u["name"], keeper.personal(u["name"], limit, now)
                    if status.spent:
                        budget_since = self.budget_spent.setdefault(key, now)
                    else:
                        self.budget_spent.pop(key, None)
                servers.append(Server(
                    user=u["name"], name=name, profile=rec.profile if rec else "", groups=groups,
                    gpu_count=rec.gpu_count if rec else 0,
                    ready_at=aware(rec.ready_at) if rec and rec.ready_at else parse_time(s.get("started")),
                    last_activity=parse_time(s.get("last_activity")),
                    cpu_busy_at=self.cpu.busy_at(u["name"], name, now) if self.cpu else None,
                    gpu_idle_since=idle_since, gpu_samples=known,
                    keep_alive_at=self._keep_alive(u["name"]),
                    runtime_limit=dt.timedelta(seconds=rec.runtime_limit_s) if rec and rec.runtime_limit_s else None,
                    budget_spent_since=budget_since, warned=rec.warned if rec else "",
                ))
        self._record_samples(samples, updates, now)
        return servers, samples

    def _record_samples(self, samples, updates, now) -> None:
        def run():
            with self.core.db.write() as s:
                for key, smp in samples.items():
                    if smp.util is not None:
                        s.add(GPUSample(device_key=key, at=naive(now), util=smp.util,
                                        memory_used_mib=smp.memory_used_mib or 0.0, power_w=smp.power_w))
                for rec_id, util, idle_since, wh in updates:
                    s.execute(sa.update(UsageRecord).where(UsageRecord.id == rec_id).values(
                        util_sum=UsageRecord.util_sum + util, util_samples=UsageRecord.util_samples + 1,
                        energy_wh=UsageRecord.energy_wh + wh,
                        idle_since=naive(idle_since) if idle_since else None))

        self.core.db.retrying(run)

    def _keep_alive(self, user: str) -> dt.datetime | None:
        """mtime of the user's ``~/.keep-alive`` (local backend: we know where homes are)."""
        if self.cfg["backend"] != "local":
            return None
        local = self.cfg["local"]
        sysname = system_username(user, local["system_user_prefix"])
        if os.geteuid() == 0 and local["system_users"] == "auto":
            home = Path(local["home_root"]) / sysname
        else:
            home = Path(self.cfg["hub"]["state_dir"]) / "homes" / sysname
        try:
            return dt.datetime.fromtimestamp((home / ".keep-alive").stat().st_mtime, UTC)
        except OSError:
            return None

    # -- acting ------------------------------------------------------------------------------
    async def _act(self, a: Action, users) -> None:
        usage = self.core.usage
        if a.kind == "warn":
            log.info("warning %s:%s: %s", a.user, a.server, a.message)
            await asyncio.to_thread(self._set_warned, a)
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

    def _set_warned(self, a: Action) -> None:
        def run():
            with self.core.db.write() as s:
                s.execute(sa.update(UsageRecord).where(
                    UsageRecord.user_name == a.user, UsageRecord.server_name == a.server,
                    UsageRecord.stopped_at.is_(None)).values(warned=a.tag))

        self.core.db.retrying(run)

    def webhook_for(self, user: str, groups) -> str | None:
        hooks = self.conf.get("webhooks") or {}
        if user in (hooks.get("users") or {}):
            return hooks["users"][user]
        for g in groups:
            if g in (hooks.get("groups") or {}):
                return hooks["groups"][g]
        return hooks.get("default")

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

    # -- the queue's keeper ------------------------------------------------------------------
    async def _restart_lost_queue_requests(self, users, now) -> None:
        """A queued request whose waiting spawn was lost (the hub restarted) is started again;
        the hub recognises it and keeps its place."""
        active = {(u["name"], n) for u in users for n in (u.get("servers") or {})}
        lost_after = dt.timedelta(seconds=float(self.cfg["queue"].get("lost_after_seconds", 120)))
        for e in await asyncio.to_thread(self.core.queue.entries):
            stale = now - aware(e.heartbeat_at) > lost_after
            if e.state != "waiting" or not stale or (e.user_name, e.server_name) in active:
                continue
            log.info("restarting %s:%s's queued request after a lost spawn", e.user_name, e.server_name)
            try:
                await self.hub.start(e.user_name, e.server_name, json.loads(e.options))
            except HubAPIError as err:
                log.warning("could not restart %s:%s's queued request: %s", e.user_name, e.server_name, err)

    def _prune(self, now) -> None:
        keep = dt.timedelta(hours=float(self.conf.get("keep_samples_hours", 6)))

        def run():
            with self.core.db.write() as s:
                s.execute(sa.delete(GPUSample).where(GPUSample.at < naive(now - keep)))

        self.core.db.retrying(run)

    async def run_forever(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                await self.run_once()
            except Exception:
                log.exception("cull round failed; trying again next round")
            await asyncio.sleep(max(0.5, self.conf["interval_seconds"] - (time.monotonic() - t0)))


__all__ = ["Culler", "utcnow"]
