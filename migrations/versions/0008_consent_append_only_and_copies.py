"""consent documents and versions append-only; signed consent copies stored as snapshots

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 16:00:00

The same triggers as the ledger's and the consent records' (0001): UPDATE, DELETE (and on
PostgreSQL TRUNCATE) are refused on consent_versions, consent_documents and the new
consent_copies, which keeps what each participant signed (checked against the ledger before a
copy is served).
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("consent_versions", "consent_documents", "consent_copies")


def upgrade() -> None:
    op.create_table(
        'consent_copies',
        sa.Column('record_id', sa.Integer(), nullable=False),
        sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('content', sa.Text(), nullable=False),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['record_id'], ['consent_records.id'],
                                name=op.f('fk_consent_copies_record_id_consent_records')),
        sa.PrimaryKeyConstraint('record_id', name=op.f('pk_consent_copies')),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if postgres:  # wellpanel_append_only() exists since 0001
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION wellpanel_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION wellpanel_append_only()")
        else:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, 'wellpanel: {verb} on {table} is refused: "
                           "the table is append-only'); END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in TABLES:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        else:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    op.drop_table('consent_copies')
