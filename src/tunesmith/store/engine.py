"""Database engines that survive concurrent writers.

SQLite: WAL (readers never block the writer), a busy timeout, and every writing
transaction opened with BEGIN IMMEDIATE, so two writers queue on the lock instead of one
failing with "database is locked" when it upgrades a read lock. `retrying` repeats a whole
transaction when a lock or a serialization conflict still gets through.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000
RETRIES = 8
TRANSIENT = ("database is locked", "database is busy", "could not serialize", "deadlock detected")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # Readers (engine.execution_options(sqlite_begin="DEFERRED")) never upgrade to a write,
    # so they can take a plain snapshot; writers take the lock up front.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | DBAPIError) and any(
        text in str(exc).lower() for text in TRANSIENT)


def retrying(work: Callable[[], T], attempts: int = RETRIES) -> T:
    """Run `work` (one whole transaction) again after a transient lock or conflict error."""
    for attempt in range(attempts):
        try:
            return work()
        except (OperationalError, DBAPIError) as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")
