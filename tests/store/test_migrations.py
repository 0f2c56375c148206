"""Migrations from an empty database give exactly the tables the ORM describes."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from tunesmith.store import migrate
from tunesmith.store.engine import make_engine
from tunesmith.store.schema import Base

TABLES = {"files", "dataset_versions", "jobs", "events", "checkpoints", "models", "model_datasets", "aliases",
          "api_keys", "base_models", "advice",
          "alembic_version"}


def test_empty_database_migrates_to_head_matching_the_models(registry_url: str) -> None:
    engine = make_engine(registry_url)
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert drift == [], f"schema.py and the migrations disagree: {drift}"
    migrate.upgrade(engine)  # idempotent
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    engine.dispose()
