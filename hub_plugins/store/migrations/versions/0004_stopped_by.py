"""who stopped a server (where the hub said)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.add_column(sa.Column("stopped_by", sa.String(255), nullable=False, server_default=""))


def downgrade():
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.drop_column("stopped_by")
