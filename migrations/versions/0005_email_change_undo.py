"""email changes can be undone from the old address

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('email_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('old_email', sqlmodel.sql.sqltypes.AutoString(length=320),
                                      nullable=True))
        batch_op.add_column(sa.Column('undo_token_hash',
                                      sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('undo_expires_at', app.db.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('undone_at', app.db.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_email_changes_undo_token_hash'),
                              ['undo_token_hash'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('email_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_email_changes_undo_token_hash'))
        batch_op.drop_column('undone_at')
        batch_op.drop_column('undo_expires_at')
        batch_op.drop_column('undo_token_hash')
        batch_op.drop_column('old_email')
