"""Database outages: noticed at once, told to people as such (503), noticed to be over.

JupyterHub reads its database for every request (who is this token?). While the database is
unreachable those reads fail, and JupyterHub answers what it would answer a stranger: 403
"Missing or invalid credentials", or 500. gpulab does not change JupyterHub's code for that; it
uses two public extension points instead:

- SQLAlchemy's ``handle_error`` event on the hub's engine and on gpulab's: a connection-level
  failure marks the database *down* the moment it happens; a small thread then tries a fresh
  connection every half second and marks it *up* again as soon as one works.
- a tornado output transform (``c.JupyterHub.tornado_settings['transforms']``): while the
  database is down, a 401/403/500 answer becomes 503 with a message that says the database is
  unavailable and when to retry (``Retry-After``). Nothing else is touched.

``watch(engine)`` is called for each engine; ``is_down()`` is what the transform (and gpulab's own
refusals) ask. The decision of what counts as an outage is :func:`is_outage` (pure).

The same transform answers one more bare 500 of JupyterHub's that is no bug either with a 503
that says why (:func:`unavailable`, pure): a stop while a restarted hub still checks that server.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import sqlalchemy as sa
from tornado.web import OutputTransform

from .reconcile import gate

log = logging.getLogger("gpulab.outage")

RETRY_AFTER = 30  # seconds, in the 503's Retry-After
TITLE = "database unavailable"
MESSAGE = ("The hub's database is unavailable right now, so this request could not be checked or "
           "carried out. Nothing was changed. Try again in a minute; if it lasts, tell an admin.")

STILL_CHECKING = ("The hub has just restarted and is still checking this server, so it cannot be stopped "
                  "yet. Nothing was changed. Try again in a few seconds.")
CHECK_RETRY_AFTER = 5
# a server's stop: /hub/api/users/<name>/server and .../servers/<server name>
_SERVER_PATH = re.compile(r"/api/users/[^/]+/servers?(/|$)")


def unavailable(status: int, method: str, path: str, *, outage: bool, gate_open: bool) -> tuple[str, str, int] | None:
    """(title, message, Retry-After seconds) of the 503 that replaces an answer, or None to keep
    it. ``outage``: the database is (or was just) down and the answer is one it causes."""
    if outage:
        return TITLE, MESSAGE, RETRY_AFTER
    if status == 500 and method == "DELETE" and not gate_open and _SERVER_PATH.search(path):
        return "the hub is starting", STILL_CHECKING, CHECK_RETRY_AFTER
    return None


# connection-level failures (an outage), as opposed to errors in a statement (a bug)
_OUTAGE_TEXT = (
    "server closed the connection", "connection refused", "terminating connection", "could not connect",
    "connection already closed", "the database system is shutting down", "the database system is starting up",
    "connection failed", "connection timed out", "no route to host", "consuming input failed",
    "connection is closed", "ssl syscall error", "server conn crashed",
)


def is_outage(text: str, disconnect: bool = False) -> bool:
    """Whether a database error means the database cannot be reached (SQLite's 'database is
    locked' is contention, not an outage)."""
    text = text.lower()
    return disconnect or any(s in text for s in _OUTAGE_TEXT)


# Answers that fail just after the database came back are failures of the outage too: sessions
# that lost their connection mid-transaction refuse work until rolled back (PendingRollbackError)
AFTERMATH = 15  # seconds


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.down_since: float | None = None
        self.up_at = float("-inf")
        self.on_up: list = []  # callables run (in the prober's thread) when the database is back
        self.urls: dict[str, sa.URL] = {}
        self.prober: threading.Thread | None = None
        self.outages = 0


_state = _State()


def is_down() -> bool:
    return _state.down_since is not None


def in_outage() -> bool:
    """Down, or back for less than AFTERMATH seconds."""
    return is_down() or time.monotonic() - _state.up_at < AFTERMATH


def when_up(fn) -> None:
    """Run ``fn()`` each time the database comes back (from the prober's thread)."""
    _state.on_up.append(fn)


def down_for() -> float:
    since = _state.down_since
    return 0.0 if since is None else time.monotonic() - since


def mark_down(reason: str = "") -> None:
    with _state.lock:
        if _state.down_since is None:
            _state.down_since = time.monotonic()
            _state.outages += 1
            log.error("gpulab: the database is unreachable (%s); answering 503 until it is back", reason[:200])
        if _state.prober is None or not _state.prober.is_alive():
            _state.prober = threading.Thread(target=_probe_until_up, name="gpulab-outage", daemon=True)
            _state.prober.start()


def mark_up() -> None:
    with _state.lock:
        was_down = _state.down_since is not None
        if was_down:
            log.warning("gpulab: the database is reachable again (after %.1f s)", down_for())
        _state.down_since = None
        _state.up_at = time.monotonic()
    if was_down:
        for fn in list(_state.on_up):
            try:
                fn()
            except Exception:
                log.exception("gpulab: after the database came back")


def _probe_until_up() -> None:
    while True:
        time.sleep(0.5)
        ok = True
        for url in list(_state.urls.values()):
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                      connect_args={} if url.drivername.startswith("sqlite") else {"connect_timeout": 2})
            try:
                with engine.connect() as c:
                    c.execute(sa.text("SELECT 1"))
            except Exception:
                ok = False
            finally:
                engine.dispose()
            if not ok:
                break
        if ok:
            mark_up()
            return


def watch(engine: sa.Engine) -> None:
    """Notice outages of this engine's database (idempotent)."""
    key = engine.url.render_as_string(hide_password=False)
    with _state.lock:
        if key in _state.urls:
            return
        _state.urls[key] = engine.url

    @sa.event.listens_for(engine, "handle_error")
    def _on_error(ctx):
        if is_outage(str(ctx.original_exception), bool(ctx.is_disconnect)):
            mark_down(str(ctx.original_exception))


def body_for(path: str, message: str = MESSAGE, title: str = TITLE) -> tuple[str, bytes]:
    """(content type, body) of the 503: JSON for APIs (as JupyterHub's errors), text otherwise."""
    if "/api/" in path or path.endswith("/api"):
        return "application/json", json.dumps({"status": 503, "message": message}).encode()
    html = f"<!doctype html><title>503: {title}</title><h1>503: {title}</h1><p>{message}</p>"
    return "text/html; charset=UTF-8", html.encode()


class DatabaseOutage(OutputTransform):
    """While the database is down (and for AFTERMATH seconds after), answers that failed
    because of it (401, 403, 500) become 503.

    Also a stop while a restarted hub still checks the server (``reconcile/gate.py`` closed:
    JupyterHub answers it 500, a RuntimeError, "pending check"): :func:`unavailable`."""

    def __init__(self, request):
        super().__init__(request)
        self.path = request.path or ""
        self.method = request.method
        self.replaced = False

    def outage_answer(self, status_code: int) -> bool:
        return status_code in (401, 403, 500) and in_outage()

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        why = unavailable(status_code, self.method, self.path, outage=self.outage_answer(status_code),
                          gate_open=gate.is_open())
        if why is not None:
            title, message, retry_after = why
            ctype, body = body_for(self.path, message, title)
            headers["Content-Type"] = ctype
            headers["Retry-After"] = str(retry_after)
            headers.pop("Transfer-Encoding", None)
            headers.pop("Content-Length", None)
            if finishing:
                headers["Content-Length"] = str(len(body))
            self.replaced = True
            return 503, headers, body
        if status_code == 503 and "Retry-After" not in headers:  # gpulab's own refusal in an outage
            headers["Retry-After"] = str(RETRY_AFTER)
        return status_code, headers, chunk

    def transform_chunk(self, chunk, finishing):
        return b"" if self.replaced else chunk


class ServiceOutage(DatabaseOutage):
    """The same in gpulab's services (``app.add_transform``): their own database errors during an
    outage, and the 502 JupyterHub's HubAuth raises when the hub could not check a token (the
    hub answered 5xx: its database is away), become the same 503."""

    def outage_answer(self, status_code: int) -> bool:
        return status_code == 502 or (status_code == 500 and in_outage())


def heal_session(session) -> bool:
    """Roll back a session whose transaction the database already lost (its connection died
    mid-transaction, or a flush failed): SQLAlchemy refuses every later use of such a session
    until someone does (PendingRollbackError), and nothing in it can commit anyway. An active,
    healthy transaction is never touched. Returns whether it rolled back."""
    try:
        tx = session.get_transaction()
        if tx is None:
            return False
        if tx.is_active and not session.connection().invalidated:
            return False
        session.rollback()
        log.warning("gpulab: rolled back a database session whose connection was lost")
        return True
    except Exception:  # the database is still away: nothing to heal yet
        try:
            session.rollback()
        except Exception:
            pass
        return False
