"""Advice before training (`tunesmith advise`): the baselines' scores, the cost estimate and the
recommendation, per dataset version.

Revision ID: 0005_advice
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_advice"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "advice",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("dataset_id", sa.String(40), sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.Column("heldout_dataset_id", sa.String(40), sa.ForeignKey("dataset_versions.id")),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("recommendation", sa.String(30), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_advice_dataset_id", "advice", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_advice_dataset_id", table_name="advice")
    op.drop_table("advice")
