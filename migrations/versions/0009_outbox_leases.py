"""outbox messages claimed under a lease

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 15:00:00

A `sending` row now carries who claimed it (claim_token), when (claimed_at) and until when
(lease_until, real clock); a row whose sender died returns to delivery when its lease runs out.
Rows already stranded in `sending` get a lease that has run out, so the next deliverer takes
them (they were stranded by processes that are gone).
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox_messages') as batch:
        batch.add_column(sa.Column('claim_token', sqlmodel.sql.sqltypes.AutoString(length=32),
                                   nullable=True))
        batch.add_column(sa.Column('claimed_at', app.db.UTCDateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column('lease_until', app.db.UTCDateTime(timezone=True),
                                   nullable=True))
        batch.create_index(op.f('ix_outbox_messages_lease_until'), ['lease_until'],
                           unique=False)
    outbox = sa.table('outbox_messages', sa.column('status', sa.String),
                      sa.column('lease_until', app.db.UTCDateTime(timezone=True)))
    op.execute(outbox.update().where(outbox.c.status == 'sending')
               .values(lease_until=datetime.now(UTC)))


def downgrade() -> None:
    with op.batch_alter_table('outbox_messages') as batch:
        batch.drop_index(op.f('ix_outbox_messages_lease_until'))
        batch.drop_column('lease_until')
        batch.drop_column('claimed_at')
        batch.drop_column('claim_token')
