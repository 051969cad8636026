"""notification preferences, and the notifier's place in the events

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "gpulab_notify_prefs",
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("events", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_name", name="pk_gpulab_notify_prefs"),
    )
    op.create_table(
        "gpulab_notify_cursor",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_gpulab_notify_cursor"),
    )


def downgrade():
    op.drop_table("gpulab_notify_cursor")
    op.drop_table("gpulab_notify_prefs")
