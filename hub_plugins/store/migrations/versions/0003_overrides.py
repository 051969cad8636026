"""quota overrides managed by admins, and the audit trail

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "gpulab_quota_overrides",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_name", sa.String(255), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("expires", sa.Date(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("approved_by", sa.String(255), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gpulab_quota_overrides"),
    )
    op.create_index("ix_gpulab_quota_overrides_user_name", "gpulab_quota_overrides", ["user_name"])
    op.create_table(
        "gpulab_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gpulab_audit"),
    )
    op.create_index("ix_gpulab_audit_at", "gpulab_audit", ["at"])
    op.create_index("ix_gpulab_audit_target", "gpulab_audit", ["target"])


def downgrade():
    op.drop_table("gpulab_audit")
    op.drop_table("gpulab_quota_overrides")
