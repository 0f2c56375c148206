"""Bring a registry database to the newest schema (Alembic `upgrade head`), on open.

The upgrade runs in one transaction that holds the database's write lock (SQLite's
BEGIN IMMEDIATE, a PostgreSQL advisory lock), so two processes opening a fresh
registry at once migrate it once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from tunesmith.store.engine import retrying

MIGRATIONS = Path(__file__).parent / "migrations"
PG_LOCK_KEY = 7_151_002  # any constant shared by every tunesmith process


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Migrate to head; a no-op (no write lock taken) when the schema is already current.

    Retried as a whole: switching a fresh SQLite file to WAL, or a first read racing
    another process's migration, can meet a lock that the busy timeout does not cover."""
    retrying(lambda: _upgrade(engine))


def _upgrade(engine: Engine) -> None:
    head = head_revision()
    if current_revision(engine) == head:
        return
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
