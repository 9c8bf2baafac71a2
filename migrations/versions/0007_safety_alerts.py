"""safety events followed up: staff alerts outbox, escalation time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'staff_alerts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column('subject_ref', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('recipient_name', sqlmodel.sql.sqltypes.AutoString(length=100),
                  nullable=False),
        sa.Column('recipient', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column('dedupe_key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('claimed_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('sent_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_alerts')),
        sa.UniqueConstraint('dedupe_key', name=op.f('uq_staff_alerts_dedupe_key')),
    )
    with op.batch_alter_table('staff_alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_alerts_next_attempt_at'), ['next_attempt_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_staff_alerts_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_staff_alerts_subject_ref'), ['subject_ref'],
                              unique=False)
    with op.batch_alter_table('safety_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('escalated_at', app.db.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('safety_events', schema=None) as batch_op:
        batch_op.drop_column('escalated_at')
    with op.batch_alter_table('staff_alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_alerts_subject_ref'))
        batch_op.drop_index(batch_op.f('ix_staff_alerts_status'))
        batch_op.drop_index(batch_op.f('ix_staff_alerts_next_attempt_at'))
    op.drop_table('staff_alerts')
