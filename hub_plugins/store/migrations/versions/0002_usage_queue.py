"""usage records, events, audit ledger, GPU samples, queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('gpulab_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('user_name', sa.String(length=255), nullable=False),
    sa.Column('server_name', sa.String(length=255), nullable=False),
    sa.Column('detail', sa.String(length=2048), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=('pk_gpulab_events'))
    )
    op.create_index(('ix_gpulab_events_at'), 'gpulab_events', ['at'], unique=False)
    op.create_index(('ix_gpulab_events_kind'), 'gpulab_events', ['kind'], unique=False)
    op.create_table('gpulab_gpu_samples',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('device_key', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('util', sa.Float(), nullable=False),
    sa.Column('memory_used_mib', sa.Float(), nullable=False),
    sa.Column('power_w', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=('pk_gpulab_gpu_samples'))
    )
    op.create_index(('ix_gpulab_gpu_samples_at'), 'gpulab_gpu_samples', ['at'], unique=False)
    op.create_index(('ix_gpulab_gpu_samples_device_key'), 'gpulab_gpu_samples', ['device_key'], unique=False)
    op.create_table('gpulab_ledger',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('before', sa.String(length=4096), nullable=False),
    sa.Column('after', sa.String(length=4096), nullable=False),
    sa.Column('reason', sa.String(length=1024), nullable=False),
    sa.Column('amount', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=('pk_gpulab_ledger'))
    )
    op.create_index(('ix_gpulab_ledger_at'), 'gpulab_ledger', ['at'], unique=False)
    op.create_index(('ix_gpulab_ledger_subject'), 'gpulab_ledger', ['subject'], unique=False)
    op.create_table('gpulab_queue',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('user_name', sa.String(length=255), nullable=False),
    sa.Column('server_name', sa.String(length=255), nullable=False),
    sa.Column('options', sa.String(length=4096), nullable=False),
    sa.Column('gpu_types', sa.String(length=1024), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=('pk_gpulab_queue')),
    sa.UniqueConstraint('user_id', 'server_name', name='uq_gpulab_queue_owner')
    )
    op.create_index(('ix_gpulab_queue_created_at'), 'gpulab_queue', ['created_at'], unique=False)
    op.create_index(('ix_gpulab_queue_user_id'), 'gpulab_queue', ['user_id'], unique=False)
    op.create_table('gpulab_usage',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('spawn_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('user_name', sa.String(length=255), nullable=False),
    sa.Column('server_name', sa.String(length=255), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=64), nullable=False),
    sa.Column('gpu_type', sa.String(length=128), nullable=False),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('equivalents', sa.String(length=32), nullable=False),
    sa.Column('devices', sa.String(length=2048), nullable=False),
    sa.Column('device_keys', sa.String(length=4096), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('rate_per_hour', sa.Float(), nullable=False),
    sa.Column('minimum_seconds', sa.Integer(), nullable=False),
    sa.Column('runtime_limit_s', sa.Integer(), nullable=True),
    sa.Column('queued_seconds', sa.Float(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('ready_at', sa.DateTime(), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.Column('stopped_at', sa.DateTime(), nullable=True),
    sa.Column('stop_reason', sa.String(length=32), nullable=False),
    sa.Column('pending_reason', sa.String(length=255), nullable=False),
    sa.Column('util_sum', sa.Float(), nullable=False),
    sa.Column('util_samples', sa.Integer(), nullable=False),
    sa.Column('energy_wh', sa.Float(), nullable=False),
    sa.Column('idle_since', sa.DateTime(), nullable=True),
    sa.Column('warned', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=('pk_gpulab_usage')),
    sa.UniqueConstraint('spawn_id', name=('uq_gpulab_usage_spawn_id'))
    )
    op.create_index(('ix_gpulab_usage_started_at'), 'gpulab_usage', ['started_at'], unique=False)
    op.create_index(('ix_gpulab_usage_stopped_at'), 'gpulab_usage', ['stopped_at'], unique=False)
    op.create_index(('ix_gpulab_usage_user_id'), 'gpulab_usage', ['user_id'], unique=False)
    op.create_index(('ix_gpulab_usage_user_name'), 'gpulab_usage', ['user_name'], unique=False)


def downgrade():

    op.drop_index(('ix_gpulab_usage_user_id'), table_name='gpulab_usage')
    op.drop_index(('ix_gpulab_usage_stopped_at'), table_name='gpulab_usage')
    op.drop_index(('ix_gpulab_usage_started_at'), table_name='gpulab_usage')
    op.drop_table('gpulab_usage')
    op.drop_index(('ix_gpulab_queue_user_id'), table_name='gpulab_queue')
    op.drop_index(('ix_gpulab_queue_created_at'), table_name='gpulab_queue')
    op.drop_table('gpulab_queue')
    op.drop_index(('ix_gpulab_ledger_subject'), table_name='gpulab_ledger')
    op.drop_index(('ix_gpulab_ledger_at'), table_name='gpulab_ledger')
    op.drop_table('gpulab_ledger')
    op.drop_index(('ix_gpulab_gpu_samples_device_key'), table_name='gpulab_gpu_samples')
    op.drop_index(('ix_gpulab_gpu_samples_at'), table_name='gpulab_gpu_samples')
    op.drop_table('gpulab_gpu_samples')
    op.drop_index(('ix_gpulab_events_kind'), table_name='gpulab_events')
    op.drop_index(('ix_gpulab_events_at'), table_name='gpulab_events')
    op.drop_table('gpulab_events')
