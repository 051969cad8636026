"""The billing service's queries: usage reports, a user's quota and budget, every GPU's state
and the queue. Plain methods over the GPU core and the hub API, shared by the API, the pages and
the metrics, so that they always agree.
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from urllib.parse import quote

from tornado import web

from hub_plugins.accounting.budgets import fmt_amount
from hub_plugins.accounting.lines import Export, csv_header
from hub_plugins.quota.decision import server_label
from hub_plugins.store import settled
from hub_plugins.store.allocator import server_use
from hub_plugins.store.usage import aware
from services.base import HubAPIError

from . import report

UTC = dt.timezone.utc


class BillingData:
    def __init__(self, live, core, hub):
        self.live, self.core, self.hub = live, core, hub

    @property
    def billing(self):
        """Prices, currency and energy as they run now (gpulab.yaml reloads)."""
        return self.core.settings.billing

    # -- usage -----------------------------------------------------------------------------
    def usage(self, user: str | None, since: dt.datetime, until: dt.datetime, now: dt.datetime) -> dict:
        records = self.core.usage.records(user, since, until)
        # a range that reaches now includes what running servers are already charged (the
        # minimum charge), as budgets and metrics do
        hi = until if until < now else now + dt.timedelta(days=1)
        rep = report.report(records, since, hi, now, self.billing.nominal_power_watts,
                            self.billing.grid_intensity_g_per_kwh, self.billing.pricing.currency)
        rep["until"] = min(until, now).isoformat()
        return rep

    def summary(self, since: dt.datetime, now: dt.datetime, groups_of) -> dict:
        """Everyone's usage since ``since``, summed (the admin page): the database sums settled
        records, the rest are worked out one by one, both by the same rule."""
        self.settle()
        b = self.billing
        sums, rest = settled.settled_sums(self.core.db, since, now)
        lines = report.charged_lines(rest, since, now + dt.timedelta(days=1), now, b.nominal_power_watts,
                                     b.grid_intensity_g_per_kwh)
        parts = [report.part_of_sum(r, b.nominal_power_watts, b.grid_intensity_g_per_kwh) for r in sums]
        return {"currency": b.pricing.currency, **report.summary(parts + [report.part_of(ln) for ln in lines], groups_of)}

    def csv_chunks(self, user: str | None, since: dt.datetime, until: dt.datetime, now: dt.datetime,
                   size: int = 5000):
        """The CSV of :meth:`usage`, in pieces of ``size`` records: each read is one short
        transaction, and memory stays flat however long the range. A generator of blocking
        calls: the caller runs each ``next`` in a thread."""
        self.settle()
        b, usage = self.billing, self.core.usage
        hi = until if until < now else now + dt.timedelta(days=1)
        export = Export(since, hi, b.nominal_power_watts, b.grid_intensity_g_per_kwh, b.pricing.currency)
        after = None
        yield csv_header()
        while True:
            heads = usage.page(user, since, until, after, size, heads_in=(since, hi))
            if not heads:
                return
            after = (heads[-1].started_at, heads[-1].id)
            records = {r.id: r for r in usage.reported([h.id for h in heads if h.report_head is None])}
            yield export.text(heads, records, now)

    def settle(self, limit: int = 5000) -> int:
        """Settle the charges of records closed since the last call (a few, after the first)."""
        return settled.settle(self.core.db, limit)

    def per_day(self, user: str | None, since: dt.datetime, now: dt.datetime) -> list[dict]:
        return report.per_day(self.core.usage.records(user, since, now), since, now)

    # -- quota and budget ------------------------------------------------------------------
    async def groups_of(self, user: str) -> list[str]:
        """The user's hub groups; a 404 (tornado HTTPError) names a user the hub does not know."""
        try:
            model = await self.hub.request("GET", f"/users/{quote(user, safe='')}")
        except HubAPIError as e:
            if e.code == 404:
                raise web.HTTPError(404, "%s", f"There is no user {user!r} on this hub.") from None
            raise
        return sorted(model.get("groups") or [])

    def quota(self, user: str, user_id: int | None, groups: list[str], now: dt.datetime) -> dict:
        core = self.core
        mine = [s for s in core.allocator.snapshot().servers if s.user_name == user]
        # borrowed servers are beyond quota: counted in no amount, listed with "borrowed": true
        view = core.quota_view(user, groups, [server_use(s) for s in mine if not s.borrowed], now)
        keeper = core.budget_keeper
        st = keeper.personal(user, view.eff.limits.budget, now)
        unit, cur = keeper.config.unit, core.pricing.currency
        projects = []
        for p in keeper.projects_of(user, groups):
            ps = keeper.project(p, now)
            projects.append({"name": p, "limit": ps.limit, "used": round(ps.used, 4),
                             "left": None if ps.left is None else round(ps.left, 4)})
        return {
            "user": user,
            "groups": list(view.eff.groups) or groups,
            "limits": view.limits,
            "sources": view.sources(list(view.limits)),
            "enforcement": view.enforcement,
            "in_use": {
                "gpus": float(view.in_use),
                "servers": [{"name": s.server_name, "label": server_label(s.server_name), "profile": s.profile,
                             "gpu_type": s.gpu_type, "gpu_count": s.gpu_count, "gpus": float(Fraction(s.equivalents)),
                             "since": aware(s.created_at).isoformat(), "borrowed": bool(s.borrowed)} for s in mine],
            },
            "overrides": view.overrides(),
            "budget": {
                "unit": unit, "currency": cur, "period": keeper.config.period.kind,
                "describe": keeper.config.period.describe(),
                "limit": st.limit, "used": round(st.used, 4), "left": None if st.left is None else round(st.left, 4),
                "spent": st.spent,
                "used_text": fmt_amount(st.used, unit, cur),
                "limit_text": "unlimited" if st.limit is None else fmt_amount(st.limit, unit, cur),
                "window_start": st.window_start and st.window_start.isoformat(),
                "resets_at": st.resets_at and st.resets_at.isoformat(),
                "retry_at": st.retry_at and st.retry_at.isoformat(),
            },
            "projects": projects,
        }

    # -- GPUs and the queue ----------------------------------------------------------------
    def gpus(self, viewer: str | None, admin: bool, now: dt.datetime) -> dict:
        """Every device and who holds it. People who are not admins see who holds *their*
        GPUs; other holders show as 'another user'."""
        core = self.core
        inv = core.inventory()
        holdings = core.allocator.holdings()
        by_key = {}
        for spawn_id, (server, devices) in holdings.items():
            for d in devices:
                by_key[d.device_key] = (server, d)
        open_records = {r.spawn_id: r for r in core.usage.records(open_only=True)}
        out = []
        for dev in sorted(inv.devices):
            row = {"key": dev.key, "host": dev.host, "index": dev.index, "gpu_type": dev.gpu_type,
                   "visible_id": dev.visible_id, "memory_gb": round(dev.memory_mib / 1024, 1),
                   "gpu_equivalents": float(dev.weight),
                   "state": "busy (outside gpulab)" if dev.key in inv.external_busy else "free"}
            if dev.key in by_key:
                server, d = by_key[dev.key]
                mine = server.user_name == viewer
                rec = open_records.get(server.spawn_id)
                idle = rec.idle_since if rec is not None else None
                row.update(state="allocated", since=aware(d.allocated_at).isoformat(),
                           user=server.user_name if (admin or mine) else "another user",
                           server=(server.server_name if (admin or mine) else None),
                           idle_seconds=(round((now - aware(idle)).total_seconds()) if idle else 0),
                           warning=(rec.warned if rec is not None and (admin or mine) else ""))
            out.append(row)
        avail = [a.as_dict() for a in core.availability()]
        return {"source": inv.source, "note": inv.note, "devices": out, "types": avail,
                "queue": self.queue(viewer, admin, now)}

    def queue(self, viewer: str | None, admin: bool, now: dt.datetime) -> list[dict]:
        ordered = self.core.queue.ordered()
        entries = {e.id: e for e in self.core.queue.entries()}
        out = []
        for pos, w in enumerate(ordered, 1):
            e = entries.get(w.id)
            visible = admin or (e is not None and e.user_name == viewer)
            out.append({
                "position": pos, "id": w.id if visible else None,
                "user": w.user if visible else "another user",
                "server": e.server_name if (visible and e) else None,
                "gpus": w.count, "gpu_types": list(w.types),
                "waiting_seconds": round((now - aware(w.created_at)).total_seconds()),
            })
        return out
