"""How the GPU core reserves: the request's GPU types, the plan of a reservation (the checks
that need no lock: project, runtime limit, budget), the queue and the release.

A base of ``GPULab`` (``core.py``), split from it by responsibility; it reads the core's
settings, inventory and stores through ``self`` and holds no state of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from fractions import Fraction

from .gpu.devices import Inventory
from .gpu.choice import auto_candidates
from .quota import Ask, Effective, check
from .spawn.request import RequestError, SpawnRequest
from .accounting.keeper import BudgetRefused
from .store.allocator import Allocation, Owner, ReservationPlan, UsageTerms
from .queue.borrowing import Borrowing, BorrowRefused, relaxed
from .queue.order import Running, Waiting, estimate_start, typical_duration
from .queue.store import QueueStore

log = logging.getLogger("gpulab.core")


class Allocating:
    """Reserving, queueing and releasing GPUs (a base of ``GPULab``)."""

    # -- allocation ------------------------------------------------------------------------
    def candidate_types(self, req: SpawnRequest, eff: Effective, inv: Inventory) -> list[str]:
        """The GPU types this request may get, in order of preference (see ``gpu/choice.py``)."""
        if req.gpu_type:
            return [req.gpu_type]
        weights = {t: inv.of_type(t)[0].weight for t in inv.types}
        types = auto_candidates(inv.types, weights, req.profile.allows_type, eff.limits.gpu_types)
        if not types:
            raise RequestError(
                f"Profile '{req.profile.name}' runs on none of the GPU types you may use on this hub; "
                "ask for 0 GPUs or name a 'gpu_type'."
            )
        return types

    def plan(self, owner: Owner, req: SpawnRequest, groups, queued_seconds: float = 0.0,
             eff: Effective | None = None) -> ReservationPlan:
        """Everything a reservation of ``req`` needs, after the checks that need no lock
        (membership of the project, the runtime limit, the budget). Raises RequestError or
        BudgetRefused. ``eff``: the user's quota as the spawn's spec was resolved with, moments
        ago (else read now)."""
        inv = self.inventory()
        eff = eff or self.effective(owner.user_name, groups)
        borrowed = bool(req.extra("preemptible"))
        if borrowed:
            why = self.borrowing.refusal(groups, self.placement == "gpulab", self.settings.queue.enabled)
            if why:
                raise BorrowRefused(why)
            # beyond quota: the GPU total and the server count are what borrowing lends
            eff = dataclasses.replace(eff, limits=relaxed(eff.limits))
        types = self.candidate_types(req, eff, inv) if req.gpus else []
        project = req.extra("project", "") or ""
        if project and not self.budget_keeper.may_use_project(project, owner.user_name, groups):
            raise RequestError(f"You are not a member of project '{project}'.")
        runtime = req.extra("runtime")
        limit = eff.limits.max_runtime_hours
        if runtime and limit is not None and runtime > limit * 3600:
            raise RequestError(
                f"You asked for a runtime of {runtime / 3600:g} h; {eff.source('max_runtime_hours')} "
                f"allows at most {limit:g} h."
            )
        if not runtime and limit is not None:
            runtime = limit * 3600  # no runtime asked for (e.g. a REST call): the limit applies
        self.check_budget(owner.user_name, eff, req, project)
        enforcement = self.quota_config.enforcement

        def quota_check(usage, gpu_type):
            weight = inv.of_type(gpu_type)[0].weight if gpu_type else Fraction(0)
            ask = Ask(owner.server_name, req.profile.name, gpu_type, req.gpus, weight * req.gpus)
            return check(ask, eff, usage, enforcement)

        terms = UsageTerms(self.pricing, project, int(runtime) if runtime else None, queued_seconds,
                           self.borrowing.rate_factor if borrowed else 1.0)
        return ReservationPlan(req.profile.name, tuple(types), req.gpus, inv, quota_check,
                               reserve=self.placement == "gpulab", terms=terms, borrowed=borrowed)

    def allocate(self, owner: Owner, req: SpawnRequest, groups, queued_seconds: float = 0.0,
                 eff: Effective | None = None) -> Allocation:
        """Budget check, then type choice + quota check + placement + the usage record, in one
        serialised transaction.

        While requests wait in the queue, a fresh spawn goes through the queue's discipline too
        (it may not take GPUs an earlier request could use): raises QueueAhead when it must wait.

        Raises RequestError, QuotaRefused, BudgetRefused or NoCapacity."""
        plan = self.plan(owner, req, groups, queued_seconds, eff)
        if self.queue_enabled:
            return self.queue.admit(owner, plan)
        return self.allocator.reserve(owner, plan)

    @property
    def borrowing(self) -> Borrowing:
        return self.settings.queue.borrowing

    @property
    def queue_enabled(self) -> bool:
        return self.settings.queue.enabled and self.placement == "gpulab"

    def waiter(self):
        """An asyncio.Event set whenever GPUs are released in this hub (queue wake-ups)."""
        event = asyncio.Event()
        self._waiters.add(event)
        return event

    def forget_waiter(self, event) -> None:
        self._waiters.discard(event)

    def notify_released(self) -> None:
        for event in list(self._waiters):
            event.set()

    def queue_estimate(self, outcome, types: list[str], count: int):
        """About when a waiting request starts (see ``queue/order.py``)."""
        now = dt.datetime.now(dt.timezone.utc)
        records = self.usage.records(since=now - dt.timedelta(days=30))
        running, past = [], []
        for r in records:
            if r.gpu_type not in types or not r.ready_at:
                continue
            if r.stopped_at is None:
                limit = dt.timedelta(seconds=r.runtime_limit_s) if r.runtime_limit_s else None
                running.append(Running(r.gpu_type, r.gpu_count, r.started_at.replace(tzinfo=dt.timezone.utc), limit))
            else:
                past.append(r.stopped_at - r.started_at)
        if outcome.estimate is not None:  # the head's reservation: the discipline's own estimate
            return outcome.estimate.replace(tzinfo=dt.timezone.utc)
        me = Waiting(0, "", now, count, tuple(types))
        return estimate_start(me, outcome.ahead, running, outcome.free, typical_duration(past), now)

    @property
    def queue(self) -> QueueStore:
        return QueueStore(self.db, self.allocator, self.settings.queue.policy)

    def queue_try_start(self, entry_id: int, owner: Owner, req: SpawnRequest, groups, queued_seconds: float):
        """One look at the queue for a waiting request: start it if it is its turn and its GPUs
        are free (see ``queue/store.py``)."""
        return self.queue.try_start(entry_id, owner, self.plan(owner, req, groups, queued_seconds))

    def check_budget(self, user_name: str, eff: Effective, req: SpawnRequest, project: str) -> None:
        """Refuse a spawn whose budget is spent. If usage cannot be read, follow
        ``billing.on_accounting_failure``: 'open' lets the spawn go (and counts it), 'closed'
        refuses it."""
        keeper = self.budget_keeper
        if keeper.config.unit == "money":
            consumes = bool(req.gpus) or self.pricing.cpu_rate > 0
        else:
            consumes = bool(req.gpus)
        try:
            keeper.check_spawn(user_name, eff.limits.budget, consumes, project)
        except BudgetRefused:
            raise
        except Exception as e:  # accounting unavailable: the rule decides, and it is counted
            policy = self.settings.billing.on_accounting_failure
            log.error("accounting unavailable for %s's spawn (%s): failing %s", user_name, e, policy)
            if policy == "closed":
                raise BudgetRefused(
                    "Usage accounting is unavailable right now, so no budget can be checked and "
                    "this hub does not start servers without it. Try again in a few minutes."
                ) from None
            self.fail_open_count += 1
            try:
                self.usage.event("fail_open", "accounting", user_name, detail=str(e)[:500])
            except Exception:
                log.exception("could not record the fail-open event either")

    def release(self, owner: Owner, spawn_id: str | None = None, reason: str = "user",
                seen_alive_at: dt.datetime | None = None, stopped_by: str = "") -> list[str]:
        return self.allocator.release(owner, spawn_id, reason, seen_alive_at, stopped_by)
