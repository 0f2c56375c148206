"""The first registry schema: files, dataset versions, jobs, events, checkpoints, models, aliases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("location", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("format", sa.String(20)),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("examples", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("warnings", sa.Integer, nullable=False),
        sa.Column("token_stats", sa.JSON),
        sa.Column("findings", sa.JSON),
        sa.Column("file_id", sa.String(40), sa.ForeignKey("files.id")),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("suffix", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("run_dir", sa.Text),
        sa.Column("train_dataset_id", sa.String(40), sa.ForeignKey("dataset_versions.id")),
        sa.Column("validation_dataset_id", sa.String(40), sa.ForeignKey("dataset_versions.id")),
        sa.Column("parent_model_id", sa.String(40)),
        sa.Column("trained_tokens", sa.Integer),
        sa.Column("steps", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_jobs_run_dir", "jobs", ["run_dir"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("step", sa.Integer),
        sa.Column("message", sa.Text),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_events_job_id", "events", ["job_id", "id"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False, unique=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id")),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("base_revision", sa.String(100)),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("recipe", sa.JSON, nullable=False),
        sa.Column("evaluation", sa.JSON, nullable=False),
        sa.Column("parent_id", sa.String(40), sa.ForeignKey("models.id")),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("deleted_at", sa.Float),
    )
    op.create_table(
        "model_datasets",
        sa.Column("model_id", sa.String(40), sa.ForeignKey("models.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("dataset_id", sa.String(40), sa.ForeignKey("dataset_versions.id"), primary_key=True),
        sa.Column("role", sa.String(20), primary_key=True),
    )
    op.create_table(
        "aliases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("model_id", sa.String(40), sa.ForeignKey("models.id"), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("aliases", "model_datasets", "models", "checkpoints", "events", "jobs",
                  "dataset_versions", "files"):
        op.drop_table(table)
