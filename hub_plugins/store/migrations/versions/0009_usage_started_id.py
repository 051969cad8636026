"""the export's keyset order as an index: (started_at, id) instead of started_at alone

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    # a CSV export reads pages after (started_at, id): with both in one index PostgreSQL walks it
    # from the last row read (the row comparison an index condition, no sort); every reader of
    # started_at alone uses its first column as before
    op.create_index("ix_gpulab_usage_started_id", "gpulab_usage", ["started_at", "id"])
    op.drop_index("ix_gpulab_usage_started_at", table_name="gpulab_usage")


def downgrade():
    op.create_index("ix_gpulab_usage_started_at", "gpulab_usage", ["started_at"])
    op.drop_index("ix_gpulab_usage_started_id", table_name="gpulab_usage")
