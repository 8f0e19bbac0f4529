"""Kept host locks: a stopped run whose remote work could not be confirmed ended keeps its hosts' locks.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('host_locks') as batch:
        batch.add_column(sa.Column('kept_reason', sa.Text(), server_default='', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('host_locks') as batch:
        batch.drop_column('kept_reason')
