"""servers and device allocations

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "gpulab_servers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("spawn_id", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("gpu_type", sa.String(128), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("equivalents", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gpulab_servers"),
        sa.UniqueConstraint("user_id", "server_name", name="uq_gpulab_servers_owner"),
        sa.UniqueConstraint("spawn_id", name="uq_gpulab_servers_spawn_id"),
    )
    op.create_index("ix_gpulab_servers_user_id", "gpulab_servers", ["user_id"])
    op.create_table(
        "gpulab_allocations",
        sa.Column("device_key", sa.String(255), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("gpu_type", sa.String(128), nullable=False),
        sa.Column("visible_id", sa.String(128), nullable=False),
        sa.Column("weight", sa.String(32), nullable=False),
        sa.Column("allocated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"], ["gpulab_servers.id"],
            name="fk_gpulab_allocations_server_id_gpulab_servers", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_key", name="pk_gpulab_allocations"),
    )
    op.create_index("ix_gpulab_allocations_server_id", "gpulab_allocations", ["server_id"])


def downgrade():
    op.drop_table("gpulab_allocations")
    op.drop_table("gpulab_servers")
