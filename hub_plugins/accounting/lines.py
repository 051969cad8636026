"""A usage record's report line, and its CSV text (pure): what the billing pages, the JSON and the
CSV export show for one server over a time range.

A closed record's line over any range that holds its whole charge is fixed once it is settled,
apart from the energy, CO2 and currency, which follow the billing settings. So ``settle`` stores
the CSV text of the rest (:func:`settled_head`, ``gpulab_usage.report_head``) and a year's export
writes each settled line as that text and the settings' part (:class:`Export`), instead of
working out and formatting two dozen fields again for half a million records. Records that are
running, not settled, or across the range's ends take :func:`line` and :func:`csv_rows`. Both
give the same text (``tests/services/test_report_settled.py``); a change to the line's fields or
format must come with a migration that settles again (see 0010_report_head).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
from dataclasses import dataclass, fields
from fractions import Fraction
from operator import itemgetter

from ..store.usage import as_usage, naive

UTC = dt.timezone.utc


@dataclass
class Line:
    user: str
    server: str
    profile: str
    project: str
    gpu_type: str
    gpu_count: int
    gpu_equivalents: float
    devices: str
    started_at: str
    ready_at: str | None
    stopped_at: str | None
    stop_reason: str
    stopped_by: str  # who asked for the stop, where the hub said ('admin:ada', 'service:idle-culler')
    running: bool
    gpu_seconds: float
    gpu_hours: float
    cost: float
    efficiency_pct: float | None  # mean GPU utilisation while allocated
    energy_kwh: float
    energy_measured: bool
    co2_kg: float
    queued_seconds: float
    preemptible: bool = False  # borrowed beyond quota (priced at queue.borrowing.rate_factor)


def nominal_watts(power: dict, gpu_type: str) -> float:
    base = gpu_type.split(":")[0]
    return float(power.get(gpu_type, power.get(base, power.get("*", 0.0))))


def wholly_inside(r, lo: dt.datetime, hi: dt.datetime,
                  naive_range: tuple[dt.datetime, dt.datetime] | None = None) -> bool:
    """Whether a settled record's whole charge falls in [lo, hi) (then its stored charge is
    what the overlap rule would give)."""
    until = getattr(r, "charged_until", None)
    if until is None:
        return False
    nlo, nhi = naive_range or (naive(lo), naive(hi))
    return r.started_at >= nlo and until <= nhi


@functools.lru_cache(maxsize=1024)
def _equivalents(text: str) -> float:
    return float(Fraction(text))


def _iso(t: dt.datetime | None) -> str | None:
    """As ``aware(t).isoformat()`` for the database's naive UTC times, without a new object per
    field (a year's export formats a million of them)."""
    if t is None:
        return None
    return t.isoformat() if t.tzinfo else t.isoformat() + "+00:00"


def energy(r, gpu_hours: float, total_gpu_hours: float | None, watts_of) -> tuple[float, bool]:
    """(kWh, measured) of ``gpu_hours`` of the record's ``total_gpu_hours``: measured power
    covers the whole life, so the range counts its share; else the GPU type's nominal power
    (``watts_of(gpu_type)``)."""
    if r.energy_wh > 0:
        return r.energy_wh / 1000 * (gpu_hours / total_gpu_hours if total_gpu_hours else 0.0), True
    return (watts_of(r.gpu_type) * gpu_hours / 1000 if r.gpu_count else 0.0), False


def line(r, lo: dt.datetime, hi: dt.datetime, now: dt.datetime, power: dict, grid_g_per_kwh: float,
         naive_range: tuple[dt.datetime, dt.datetime] | None = None) -> Line:
    """One record's report line for [lo, hi) (``naive_range``: the same range as the database's
    naive UTC, when the caller has it for many records)."""
    u = None
    if wholly_inside(r, lo, hi, naive_range):
        # its whole charge, settled once by the same rule (store/settled.py)
        gpu_hours = total = r.charged_gpu_seconds / 3600
        cost = r.charged_cost
    else:
        u = as_usage(r)
        gpu_hours = u.amount("gpu_hours", lo, hi, now)
        cost = u.amount("money", lo, hi, now)
        total = u.charge(now).gpu_seconds / 3600 if r.energy_wh > 0 else None
    kwh, measured = energy(r, gpu_hours, total, functools.partial(nominal_watts, power))
    return Line(
        user=r.user_name, server=r.server_name, profile=r.profile, project=r.project,
        gpu_type=r.gpu_type, gpu_count=r.gpu_count, gpu_equivalents=_equivalents(r.equivalents), devices=r.devices,
        started_at=_iso(r.started_at), ready_at=_iso(r.ready_at), stopped_at=_iso(r.stopped_at),
        stop_reason=r.stop_reason, stopped_by=r.stopped_by, running=r.stopped_at is None,
        gpu_seconds=round(gpu_hours * 3600, 3), gpu_hours=round(gpu_hours, 6),
        cost=cost, efficiency_pct=(round(r.util_sum / r.util_samples, 1) if r.util_samples else None),
        energy_kwh=round(kwh, 6), energy_measured=measured, co2_kg=round(kwh * grid_g_per_kwh / 1000, 6),
        queued_seconds=round(r.queued_seconds, 1), preemptible=bool(r.borrowed),
    )


def shown(ln: Line) -> bool:
    """Whether a report lists the line: something charged, or a server still running."""
    return ln.gpu_seconds > 0 or ln.cost > 0 or ln.running


# -- CSV ---------------------------------------------------------------------------------------
CSV_FIELDS = [f.name for f in fields(Line)]  # a line's fields, in order, then the currency
_COST = CSV_FIELDS.index("cost")
_ENERGY = CSV_FIELDS.index("energy_kwh")  # from here on: the settings' part (Export.tail)
# the fields around the cost (written with 6 decimals), each side read in one call
_BEFORE_COST = itemgetter(*CSV_FIELDS[:_COST])
_AFTER_COST = itemgetter(*CSV_FIELDS[_COST + 1:])
_COST_TO_ENERGY = CSV_FIELDS[_COST + 1:_ENERGY]


def csv_header() -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_FIELDS + ["currency"])
    return buf.getvalue()


def csv_rows(records: list[dict], currency: str) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows([*_BEFORE_COST(ln), _cost_text(ln["cost"]), *_AFTER_COST(ln), currency]
                              for ln in records)
    return buf.getvalue()


def _cost_text(cost: float) -> str:
    return f"{round(cost, 6):.6f}"


_HIGH = dt.datetime.max.replace(tzinfo=UTC)
_LOW = dt.datetime.min.replace(tzinfo=UTC)


def settled_head(r) -> str:
    """The CSV text of a settled record's line up to its energy (with the comma after), over any
    range that holds its whole charge; '' for a line no report shows. ``r``: the record with
    its ``charged_*`` fields."""
    ln = line(r, _LOW, _HIGH, _HIGH, {}, 0.0, (dt.datetime.min, dt.datetime.max))
    if not shown(ln):
        return ""
    d = vars(ln)
    buf = io.StringIO()
    csv.writer(buf).writerow([*_BEFORE_COST(d), _cost_text(ln.cost), *(d[k] for k in _COST_TO_ENERGY), ""])
    return buf.getvalue()[:-2]  # the row ends ',\r\n': keep the comma


class Export:
    """The CSV text of an export's pages over [lo, hi): a settled record's stored text and the
    settings' part where the text applies (its whole charge is in the range), else its line
    worked out. The currency is quoted once, each GPU type's nominal power looked up once."""

    def __init__(self, lo: dt.datetime, hi: dt.datetime, power: dict, grid_g_per_kwh: float, currency: str):
        self.lo, self.hi, self.bounds = lo, hi, (naive(lo), naive(hi))
        self.power, self.grid, self.currency = power, grid_g_per_kwh, currency
        buf = io.StringIO()
        csv.writer(buf).writerow([currency])
        self.line_end = buf.getvalue()  # the currency, quoted if need be, and the line's end
        self.watts: dict[str, float] = {}

    def text(self, heads: list, records: dict, now: dt.datetime) -> str:
        """A page: ``heads`` in their order (``Head``: usage.py page, with a ``report_head`` only
        where it is the line in this range), ``records`` (id: the record's reported columns) for
        the others. A record missing there is skipped (deleted since the page was read)."""
        out, worked_out = [], []
        for h in heads:
            if h.report_head is not None:
                if worked_out:
                    out.append(csv_rows(worked_out, self.currency))
                    worked_out = []
                if h.report_head:
                    out.append(h.report_head + self.tail(h))
            elif (r := records.get(h.id)) is not None:
                ln = line(r, self.lo, self.hi, now, self.power, self.grid, self.bounds)
                if shown(ln):
                    worked_out.append(vars(ln))
        if worked_out:
            out.append(csv_rows(worked_out, self.currency))
        return "".join(out)

    def tail(self, h) -> str:
        """The settings' part of a settled line (from the energy on), as csv_rows writes it."""
        gpu_hours = h.charged_gpu_seconds / 3600
        kwh, measured = energy(h, gpu_hours, gpu_hours, self.watts_of)
        return (f"{round(kwh, 6)!r},{measured},{round(kwh * self.grid / 1000, 6)!r},"
                f"{round(h.queued_seconds, 1)!r},{bool(h.borrowed)},{self.line_end}")

    def watts_of(self, gpu_type: str) -> float:
        w = self.watts.get(gpu_type)
        if w is None:
            w = self.watts[gpu_type] = nominal_watts(self.power, gpu_type)
        return w
