"""Release ff8a351: coverage and flapping columns on hosts, runs, run_hosts and task_results.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('flapping', sa.Text(), server_default='', nullable=False))

    with op.batch_alter_table('run_hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accepted', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('verified', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('executed', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hosts_unverified', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('task_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('accepted', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('executed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('rescued', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('cause', sa.String(length=10), server_default='', nullable=False))
        batch_op.add_column(sa.Column('flapping', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('task_results', schema=None) as batch_op:
        batch_op.drop_column('flapping')
        batch_op.drop_column('cause')
        batch_op.drop_column('rescued')
        batch_op.drop_column('executed')
        batch_op.drop_column('accepted')
        batch_op.drop_column('reason')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('hosts_unverified')

    with op.batch_alter_table('run_hosts', schema=None) as batch_op:
        batch_op.drop_column('executed')
        batch_op.drop_column('verified')
        batch_op.drop_column('accepted')

    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('flapping')
