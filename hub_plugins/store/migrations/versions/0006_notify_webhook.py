"""people's chat webhooks, each with its own place in the events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("gpulab_notify_prefs") as batch:
        batch.add_column(sa.Column("webhook", sa.String(2000), nullable=False, server_default=""))
        batch.add_column(sa.Column("webhook_last_id", sa.Integer(), nullable=False, server_default="0"))
    # each person's events after their place (the webhook notifier's query)
    op.create_index("ix_gpulab_events_user_name_id", "gpulab_events", ["user_name", "id"])


def downgrade():
    op.drop_index("ix_gpulab_events_user_name_id", table_name="gpulab_events")
    with op.batch_alter_table("gpulab_notify_prefs") as batch:
        batch.drop_column("webhook_last_id")
        batch.drop_column("webhook")
