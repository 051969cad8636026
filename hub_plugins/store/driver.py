"""SQLAlchemy Core statements run on SQLite's own cursor, for the hub loop's hot writes.

A stop's release (``release.py``) is written on the hub's loop, where every stop waits its turn
behind the others. Through SQLAlchemy's execution (parameters, result metadata, rows) its five
statements cost about 3x what SQLite took to run them: 0.24 ms of CPU a release against 0.075 ms
on the same connection's cursor, in the same ``Database.write_now`` transaction (measured, one
at a time); on the overhead benchmark's busy hub 0.68 ms a stop.

The statements stay the one source: each Core statement is compiled once for the dialect, its
expanding ``IN`` lists are filled in per call (``construct_expanded_state``), and datetimes go in
and come out through SQLAlchemy's own type processors, so what is stored is exactly what the ORM
stores and reads. A driver error is raised as SQLAlchemy's (``OperationalError``, ...), as the
callers' retries expect. SQLite only: PostgreSQL's releases go through SQLAlchemy, which also
notices a dropped connection and replaces it.
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from typing import Any

import sqlalchemy as sa


_MOST_SHAPES = 1000
_HELD = object()


class DriverStatements:
    """Run ``stmt`` with ``params`` on ``conn``'s (a SQLAlchemy Connection's) driver cursor, in
    the transaction ``conn`` holds. One per dialect: it keeps the compiled statements. For
    statements whose parameters are all given (column defaults are SQLAlchemy's execution's) and
    whose lists hold no datetimes (only the parameters themselves are converted)."""

    def __init__(self, dialect: sa.Dialect):
        if not dialect.positional:
            raise ValueError(f"{dialect.name}: statements on the driver's cursor are for SQLite's positional parameters")
        self.dialect = dialect
        self._shapes: dict[tuple, tuple[str, list]] = {}  # (stmt, (list, length)...) -> SQL, order
        self._rows: dict[Any, tuple] = {}
        impl = sa.DateTime().dialect_impl(dialect)
        self._to_db = impl.bind_processor(dialect)
        self._from_db = impl.result_processor(dialect, None)

    def all(self, conn: sa.Connection, stmt, params: dict) -> list:
        """The rows of a SELECT (attribute access by column key) or a RETURNING (tuples); none for
        a statement that returns none."""
        sql, args = self._expanded(stmt, params)
        cur = self._cursor(conn)
        try:
            rows = cur.execute(sql, args).fetchall()
        except self.dialect.loaded_dbapi.Error as e:
            raise self._wrapped(sql, args, e) from e
        finally:
            cur.close()
        make, stamps = self._row_type(stmt)
        if make is None:
            return rows
        return [make(*[self._from_db(v) if i in stamps and v is not None else v for i, v in enumerate(row)])
                for row in rows]

    def many(self, conn: sa.Connection, stmt, params: list[dict]) -> None:
        """``stmt`` once for each parameter set (an executemany)."""
        if not params:
            return
        expanded = [self._expanded(stmt, p) for p in params]
        sql = expanded[0][0]
        cur = self._cursor(conn)
        try:
            cur.executemany(sql, [args for _sql, args in expanded])
        except self.dialect.loaded_dbapi.Error as e:
            raise self._wrapped(sql, None, e) from e
        finally:
            cur.close()

    # -- internals ---------------------------------------------------------------------------------
    def _expanded(self, stmt, params: dict) -> tuple[str, tuple]:
        """The statement's SQL with its IN lists as long as ``params``' and its positional
        arguments. SQLAlchemy's expansion is done once for each length of the lists and kept
        (each time, it cost more than SQLite's execution)."""
        if self._to_db is not None:
            params = {k: self._to_db(v) if isinstance(v, dt.datetime) else v for k, v in params.items()}
        shape = (stmt, *sorted((k, len(v)) for k, v in params.items() if isinstance(v, (list, tuple))))
        known = self._shapes.get(shape)
        if known is None:
            if len(self._shapes) >= _MOST_SHAPES:  # a bound on what odd group sizes leave
                self._shapes.clear()
            compiled = stmt.compile(dialect=self.dialect)
            state = compiled.construct_expanded_state(params)
            where = {name: (key, i) for key, names in state.parameter_expansion.items()
                     for i, name in enumerate(names)}
            # each argument: the i-th of a list, a parameter given, or a value the statement holds
            order = [where[n] if n in where else (n, None) if n in params else (_HELD, state.parameters[n])
                     for n in state.positiontup]
            known = self._shapes[shape] = (state.statement, order)
        sql, order = known
        return sql, tuple(b if a is _HELD else params[a] if b is None else params[a][b] for a, b in order)

    def _row_type(self, stmt) -> tuple:
        """A named tuple for a SELECT's rows and which of its columns hold datetimes."""
        known = self._rows.get(stmt)
        if known is None:
            if isinstance(stmt, sa.Select):
                cols = list(stmt.selected_columns)
                stamps = {i for i, c in enumerate(cols) if isinstance(c.type, sa.DateTime)}
                known = (namedtuple("Row", [c.key for c in cols]), stamps if self._from_db else set())
            else:
                known = (None, set())
            self._rows[stmt] = known
        return known

    @staticmethod
    def _cursor(conn: sa.Connection):
        return conn.connection.driver_connection.cursor()

    def _wrapped(self, sql: str, args, e: Exception) -> Exception:
        return sa.exc.DBAPIError.instance(sql, args, e, self.dialect.loaded_dbapi.Error, dialect=self.dialect)
