"""borrowed servers: beyond quota, preemptible, reclaimed when someone within quota waits

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    # server_default: rows written before this revision were all within quota
    with op.batch_alter_table("gpulab_servers") as batch:
        batch.add_column(sa.Column("borrowed", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.add_column(sa.Column("borrowed", sa.Boolean(), nullable=False, server_default=sa.false()))
        # set when the culler warned that it takes the server back: the stop is due then
        batch.add_column(sa.Column("reclaim_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.drop_column("reclaim_at")
        batch.drop_column("borrowed")
    with op.batch_alter_table("gpulab_servers") as batch:
        batch.drop_column("borrowed")
