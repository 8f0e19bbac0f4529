"""Issue 11: run leases and the leader lock, inventory guard, token owners, web sessions, auth failures.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auth_failures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('auth_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_failures_at'), ['at'], unique=False)
        batch_op.create_index('ix_auth_failures_scope_key_at', ['scope', 'key', 'at'], unique=False)

    op.create_table('revision_inventories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha', sa.String(length=64), nullable=False),
    sa.Column('hosts', sa.Text(), nullable=False),
    sa.Column('accepted', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('judged_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha')
    )
    op.create_table('web_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_sessions_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_api_tokens_owner_id'), ['owner_id'], unique=False)
        batch_op.create_foreign_key('fk_api_tokens_owner_id_users', 'users', ['owner_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), server_default='drift', nullable=False))
        batch_op.add_column(sa.Column('reason', sa.Text(), server_default='', nullable=False))

    with op.batch_alter_table('controller_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leader_id', sa.String(length=255), server_default='', nullable=False))
        batch_op.add_column(sa.Column('leader_pid', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('leader_host', sa.String(length=255), server_default='', nullable=False))
        batch_op.add_column(sa.Column('leader_expires_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_holder', sa.String(length=255), server_default='', nullable=False))
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('lease_holder')

    with op.batch_alter_table('controller_state', schema=None) as batch_op:
        batch_op.drop_column('leader_expires_at')
        batch_op.drop_column('leader_host')
        batch_op.drop_column('leader_pid')
        batch_op.drop_column('leader_id')

    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('kind')

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('fk_api_tokens_owner_id_users', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_tokens_owner_id'))
        batch_op.drop_column('expires_at')
        batch_op.drop_column('owner_id')

    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_sessions_user_id'))

    op.drop_table('web_sessions')
    op.drop_table('revision_inventories')
    with op.batch_alter_table('auth_failures', schema=None) as batch_op:
        batch_op.drop_index('ix_auth_failures_scope_key_at')
        batch_op.drop_index(batch_op.f('ix_auth_failures_at'))

    op.drop_table('auth_failures')
