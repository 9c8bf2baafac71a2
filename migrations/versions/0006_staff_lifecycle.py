"""staff lifecycle: token expiry, last use, TOTP, login challenges, counted failed logins

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 13:00:00

Existing members' tokens count as issued when the member was created, so a token older than
WELLPANEL_STAFF_TOKEN_TTL_DAYS is expired after the upgrade (`wellpanel staff rotate` renews it).
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('staff_members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_issued_at', app.db.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('last_used_at', app.db.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('totp_secret', sqlmodel.sql.sqltypes.AutoString(length=255),
                                      nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.Integer(), nullable=True))
    op.execute("UPDATE staff_members SET token_issued_at = created_at")
    with op.batch_alter_table('staff_members', schema=None) as batch_op:
        batch_op.alter_column('token_issued_at', existing_type=app.db.UTCDateTime(timezone=True),
                              nullable=False)

    op.create_table(
        'staff_login_challenges',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('staff_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('used_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('wrong_codes', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['staff_id'], ['staff_members.id'],
                                name=op.f('fk_staff_login_challenges_staff_id_staff_members')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_login_challenges')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_staff_login_challenges_token_hash')),
    )
    with op.batch_alter_table('staff_login_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_login_challenges_staff_id'), ['staff_id'],
                              unique=False)

    op.create_table(
        'staff_login_failures',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('window_start', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ip', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('ledgered', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_login_failures')),
        sa.UniqueConstraint('window_start', 'ip', 'channel',
                            name=op.f('uq_staff_login_failures_window_start_ip_channel')),
    )
    with op.batch_alter_table('staff_login_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_login_failures_window_start'),
                              ['window_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('staff_login_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_login_failures_window_start'))
    op.drop_table('staff_login_failures')
    with op.batch_alter_table('staff_login_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_login_challenges_staff_id'))
    op.drop_table('staff_login_challenges')
    with op.batch_alter_table('staff_members', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_secret')
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('token_issued_at')
