"""each settled record's report line as CSV text (up to its energy), and everything settled again

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.add_column(sa.Column("report_head", sa.Text(), nullable=True))
    # Settled records get their line's text when they are settled: unsettle them all, and empty
    # the sums they were added to, so that the billing service settles the history again at
    # its start (in batches, in the background). Until it has, readers work out what is not
    # settled record by record, by the same rule: slower, never different.
    # (A later change to the line's fields or format does the same.)
    op.execute("UPDATE gpulab_usage SET charged_until = NULL, charged_gpu_seconds = NULL, "
               "charged_cost = NULL, report_head = NULL")
    op.execute("DELETE FROM gpulab_usage_daily")
    op.execute("DELETE FROM gpulab_usage_totals")


def downgrade():
    with op.batch_alter_table("gpulab_usage") as batch:
        batch.drop_column("report_head")
