"""how participants may be emailed: one-click unsubscribe, stopped email, undeliverable

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 16:30:00

`mail_contacts` (app/notify/models.py MailContact): the hash of each participant's
List-Unsubscribe token, what a one-click unsubscribe does for them (stop email contact, or
pause), when they stopped email contact, and whether their address was refused for good (time,
SMTP code, source, a keyed hash of that address; never the address).
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'mail_contacts',
        sa.Column('participant_id', sqlmodel.sql.sqltypes.AutoString(length=36),
                  nullable=False),
        sa.Column('unsubscribe_hash', sqlmodel.sql.sqltypes.AutoString(length=64),
                  nullable=True),
        sa.Column('one_click', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('email_stopped_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('undeliverable_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('undeliverable_code', sa.Integer(), nullable=True),
        sa.Column('undeliverable_source', sqlmodel.sql.sqltypes.AutoString(length=20),
                  nullable=True),
        sa.Column('undeliverable_address', sqlmodel.sql.sqltypes.AutoString(length=64),
                  nullable=True),
        sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id']),
        sa.PrimaryKeyConstraint('participant_id'),
        sa.UniqueConstraint('unsubscribe_hash'),
    )


def downgrade() -> None:
    op.drop_table('mail_contacts')
