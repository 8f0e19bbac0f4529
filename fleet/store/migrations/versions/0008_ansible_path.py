"""Which path each run (and each shard of a scale-out run) took: forked warm from a kept Ansible process, or
cold and why ('warm' | 'cold: <reason>' | for a run of shards 'mixed: ...'; '' for runs recorded before).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('runs', 'shards'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('ansible_path', sa.Text(), server_default='', nullable=False))


def downgrade() -> None:
    for table in ('shards', 'runs'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('ansible_path')
