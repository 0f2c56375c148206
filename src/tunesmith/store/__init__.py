"""The registry: every file, dataset version, job, event, checkpoint, model and alias.

SQLite in the tunesmith home folder by default, PostgreSQL when TUNESMITH_DATABASE_URL
is set; the schema is migrated with Alembic when the registry is opened. Nothing here
imports torch, so the registry commands start fast.
"""

from tunesmith.store.registry import Registry, open_registry

__all__ = ["Registry", "open_registry"]
