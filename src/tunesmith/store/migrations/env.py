"""Alembic environment: runs on the connection tunesmith.store.migrate hands over."""

from __future__ import annotations

from alembic import context

from tunesmith.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
