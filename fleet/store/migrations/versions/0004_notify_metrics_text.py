"""Issue 12: drift age and time to fix, notifications, pruned run durations; outside input in Text.

Host names, limits, authors, refs, account names and audit fields become TEXT: PostgreSQL refuses a
value longer than a VARCHAR(n) (a 300-character host name), SQLite never checked the length. On SQLite
the column types are left as they are: VARCHAR(n) and TEXT are the same there, and changing them would
copy every table, task_results included.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# (table, column, type before): widened to Text.
WIDENED = (
    ("api_tokens", "name", sa.String(255)), ("api_tokens", "created_by", sa.String(255)),
    ("approvals", "host", sa.String(255)), ("approvals", "decided_by", sa.String(255)),
    ("audit_log", "actor", sa.String(255)), ("audit_log", "target", sa.String(255)),
    ("auth_failures", "key", sa.String(255)), ("host_locks", "host", sa.String(255)),
    ("hosts", "name", sa.String(255)), ("hosts", "address", sa.String(255)), ("hosts", "os", sa.String(255)),
    ("revisions", "ref", sa.String(255)), ("revisions", "author", sa.String(255)),
    ("run_hosts", "host", sa.String(255)), ("runs", "limit", sa.String(1024)),
    ("runs", "requested_by", sa.String(255)), ("task_results", "host", sa.String(255)),
    ("task_results", "action", sa.String(255)), ("users", "name", sa.String(255)),
)


def upgrade() -> None:
    op.create_table('drift_resolutions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('drifted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('drift_resolutions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drift_resolutions_resolved_at'), ['resolved_at'], unique=False)

    op.create_table('notified_hosts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('condition', sa.String(length=20), server_default='', nullable=False),
    sa.Column('tasks', sa.Text(), server_default='[]', nullable=False),
    sa.Column('noted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('host')
    )
    op.create_table('notify_targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('display', sa.Text(), server_default='', nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
    sa.Column('sent_in_window', sa.Integer(), server_default='0', nullable=False),
    sa.Column('folded', sa.Integer(), server_default='0', nullable=False),
    sa.Column('sent_total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), server_default='', nullable=False),
    sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_table('pruned_run_durations',
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('total_seconds', sa.Float(), server_default='0', nullable=False),
    sa.Column('buckets', sa.Text(), server_default='{}', nullable=False),
    sa.PrimaryKeyConstraint('kind')
    )
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('drift_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_ok_check_at', sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        for table, column, before in WIDENED:
            op.alter_column(table, column, existing_type=before, type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table, column, before in WIDENED:  # fails on a value longer than the old limit, changing nothing
            op.alter_column(table, column, existing_type=sa.Text(), type_=before, existing_nullable=False)
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('last_ok_check_at')
        batch_op.drop_column('drift_since')
    op.drop_table('pruned_run_durations')
    op.drop_table('notify_targets')
    op.drop_table('notified_hosts')
    with op.batch_alter_table('drift_resolutions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drift_resolutions_resolved_at'))
    op.drop_table('drift_resolutions')
