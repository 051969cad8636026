"""a closed usage record's charge, settled once (so that a year of history is summed by the database)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    # filled after the fact by UsageStore.settle (the billing service), not here: the charging
    # rule is Python's (accounting/pricing.py) and a migration must not import the app
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.add_column(sa.Column("charged_until", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("charged_gpu_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("charged_cost", sa.Float(), nullable=True))
    # a person's history by time (their billing page, budgets) without a scan of everyone's
    op.create_index("ix_gpulab_usage_user_started", "gpulab_usage", ["user_name", "started_at"])
    op.create_index("ix_gpulab_usage_charged", "gpulab_usage", ["charged_until", "started_at"])
    op.create_index("ix_gpulab_usage_user_charged", "gpulab_usage",
                    ["user_name", "charged_until", "charged_gpu_seconds", "charged_cost"])
    op.create_index("ix_gpulab_usage_stop_reason", "gpulab_usage", ["stop_reason"])


def downgrade():
    for name in ("ix_gpulab_usage_stop_reason", "ix_gpulab_usage_user_charged", "ix_gpulab_usage_charged",
                 "ix_gpulab_usage_user_started"):
        op.drop_index(name, table_name="gpulab_usage")
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.drop_column("charged_cost")
        batch.drop_column("charged_gpu_seconds")
        batch.drop_column("charged_until")
