"""staff alerts claimed under a lease, like the participant outbox (0009)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 17:30:00

A `sending` alert now carries who claimed it (claim_token) and until when (lease_until, real
clock); it returns to delivery when its holder's lease runs out, and a holder whose lease ran
out sends nothing. Alerts left in `sending` get a lease that has run out, so the next deliverer
takes them.
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('staff_alerts') as batch:
        batch.add_column(sa.Column('claim_token', sqlmodel.sql.sqltypes.AutoString(length=32),
                                   nullable=True))
        batch.add_column(sa.Column('lease_until', app.db.UTCDateTime(timezone=True),
                                   nullable=True))
    alerts = sa.table('staff_alerts', sa.column('status', sa.String),
                      sa.column('lease_until', app.db.UTCDateTime(timezone=True)))
    op.execute(alerts.update().where(alerts.c.status == 'sending')
               .values(lease_until=datetime.now(UTC)))


def downgrade() -> None:
    with op.batch_alter_table('staff_alerts') as batch:
        batch.drop_column('lease_until')
        batch.drop_column('claim_token')
