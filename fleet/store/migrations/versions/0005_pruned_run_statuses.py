"""Issue 12: pruned_run_durations.statuses, the runs retention deleted per final status.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pruned_run_durations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('statuses', sa.Text(), server_default='{}', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('pruned_run_durations', schema=None) as batch_op:
        batch_op.drop_column('statuses')
