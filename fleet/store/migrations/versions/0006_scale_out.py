"""Issue 13 (scale-out): shards, workers, host-key pins in the store, runs.waiting_reason, 64-bit event seqs.

On SQLite an INTEGER is 64 bits already, so the seq columns are widened on PostgreSQL only (no copy of the
largest tables there).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _widens_integers() -> bool:
    return op.get_bind().dialect.name != 'sqlite'


def upgrade() -> None:
    op.create_table('host_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('key_type', sa.String(length=64), nullable=False),
    sa.Column('key_b64', sa.Text(), nullable=False),
    sa.Column('pinned_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pinned_by', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'key_type', name='uq_host_keys_name_type')
    )
    op.create_table('workers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('queues', sa.Text(), nullable=False),
    sa.Column('running', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refusing', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workers_heartbeat_at'), ['heartbeat_at'], unique=False)

    op.create_table('shards',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('hosts', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.Text(), server_default='', nullable=False),
    sa.Column('token', sa.String(length=64), server_default='', nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('outcome', sa.String(length=20), server_default='', nullable=False),
    sa.Column('strategy', sa.String(length=40), server_default='', nullable=False),
    sa.Column('verdicts', sa.Text(), server_default='', nullable=False),
    sa.Column('ansible_pid', sa.Integer(), nullable=True),
    sa.Column('history', sa.Text(), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'index', name='uq_shards_run_index')
    )
    with op.batch_alter_table('shards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shards_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_shards_status'), ['status'], unique=False)

    if _widens_integers():
        with op.batch_alter_table('run_output', schema=None) as batch_op:
            batch_op.alter_column('seq', existing_type=sa.INTEGER(), type_=sa.BigInteger(), existing_nullable=False)

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('waiting_reason', sa.Text(), server_default='', nullable=False))

    if _widens_integers():
        with op.batch_alter_table('task_results', schema=None) as batch_op:
            batch_op.alter_column('seq', existing_type=sa.INTEGER(), type_=sa.BigInteger(), existing_nullable=False)



def downgrade() -> None:
    if _widens_integers():
        with op.batch_alter_table('task_results', schema=None) as batch_op:
            batch_op.alter_column('seq', existing_type=sa.BigInteger(), type_=sa.INTEGER(), existing_nullable=False)

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('waiting_reason')

    if _widens_integers():
        with op.batch_alter_table('run_output', schema=None) as batch_op:
            batch_op.alter_column('seq', existing_type=sa.BigInteger(), type_=sa.INTEGER(), existing_nullable=False)

    with op.batch_alter_table('shards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shards_status'))
        batch_op.drop_index(batch_op.f('ix_shards_run_id'))

    op.drop_table('shards')
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workers_heartbeat_at'))

    op.drop_table('workers')
    op.drop_table('host_keys')
