"""The HTTP API: job fields (files, hyperparameters, seed, metadata, error code/param), the
worker protocol (requested action, claim, heartbeat), deleted files and hashed API keys.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

def job_columns() -> list[sa.Column]:
    return [
        sa.Column("training_file", sa.String(40)),
        sa.Column("validation_file", sa.String(40)),
        sa.Column("hyperparameters", sa.JSON),
        sa.Column("seed", sa.Integer),
        sa.Column("user_metadata", sa.JSON),
        sa.Column("error_code", sa.String(60)),
        sa.Column("error_param", sa.String(60)),
        sa.Column("requested_action", sa.String(20)),
        sa.Column("worker_id", sa.String(120)),
        sa.Column("heartbeat_at", sa.Float),
    ]


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in job_columns():
            batch.add_column(column)
    op.create_index("ix_jobs_status_worker", "jobs", ["status", "worker_id"])
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("deleted_at", sa.Float))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(20), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("deleted_at")
    op.drop_index("ix_jobs_status_worker", "jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in reversed(job_columns()):
            batch.drop_column(column.name)
