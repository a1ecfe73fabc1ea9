"""Retry a database operation through transient failures, with exponential backoff.

Workers on many hosts share one PostgreSQL server for days: a restarted server, a
dropped connection (a network blip, `pg_terminate_backend`, a failover) or a SQLite file
briefly locked by another writer must cost a retry, not a worker. Only errors that say
the connection or the lock failed are retried; a constraint violation or a bad query is
raised at once. The operation must be idempotent (bench's writes are upserts, claims
re-check their owner), since a commit may have happened before the connection broke.
"""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from bench.errors import one_line

T = TypeVar("T")

# SQLSTATE classes that mean "the connection or the server, not the statement":
# 08 connection exception, 57P admin shutdown / crash shutdown / cannot connect now,
# 40001/40P01 serialization failure / deadlock (the transaction may simply be rerun).
_TRANSIENT_SQLSTATE = ("08", "57P", "40001", "40P01", "53300")
_TRANSIENT_TEXT = ("database is locked", "server closed the connection", "connection refused",
                   "terminating connection", "could not connect", "connection is closed",
                   "the database system is starting up", "the database system is shutting down",
                   "consuming input failed", "connection timed out", "ssl syscall error")


def is_transient(e: BaseException) -> bool:
    if not isinstance(e, DBAPIError):
        return False
    if e.connection_invalidated or isinstance(e, InterfaceError):
        return True
    code = getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)
    if code and str(code).startswith(_TRANSIENT_SQLSTATE):
        return True
    msg = str(e.orig if e.orig is not None else e).lower()
    return isinstance(e, OperationalError) and any(t in msg for t in _TRANSIENT_TEXT)


def with_retry(fn: Callable[[], T], *, attempts: int = 8, first_delay: float = 0.25,
               max_delay: float = 8.0, what: str = "a database operation",
               log: Callable[[str], None] | None = None) -> T:
    """fn(), retried on transient errors: delays 0.25, 0.5, 1, … s (±25 % jitter, at most
    `max_delay`), about a minute in all by default; the last error is raised."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except DBAPIError as e:
            if attempt == attempts or not is_transient(e):
                raise
            if log is not None:
                cause = one_line(e.orig if e.orig is not None else e, limit=200)
                log(f"retrying {what} in {delay:.1f}s after a transient error ({attempt}/{attempts - 1}): {cause}")
            time.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(max_delay, delay * 2)
    raise AssertionError("unreachable")
