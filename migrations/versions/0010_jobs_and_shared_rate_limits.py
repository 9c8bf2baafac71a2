"""background jobs under leases; rate-limit counters shared by every process

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 16:10:00

`jobs`: exports and analyses as jobs any process may claim under a lease on the real clock
(claimed_by, claim_token, lease_until, heartbeat_at); see app/jobs/service.py.
`rate_limit_hits`: one row per counted request of a moving-window rate limit, under a keyed
hash of the limit's key; see app/core/ratelimit_store.py.
Export jobs a process left queued or running before this revision cannot be resumed (their
parameters lived in that process): they end failed, as they did at startup before.
"""
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INTERRUPTED = ("interrupted: the server stopped before this export finished; "
               "start the export again")


def upgrade() -> None:
    op.create_table(
        'jobs',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=30), nullable=False),
        sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('max_attempts', sa.Integer(), nullable=False),
        sa.Column('run_after', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('claim_token', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('lease_until', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('heartbeat_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('started_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('finished_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    )
    with op.batch_alter_table('jobs') as batch:
        batch.create_index('ix_jobs_status_run_after', ['status', 'run_after'], unique=False)
        batch.create_index(op.f('ix_jobs_subject'), ['subject'], unique=False)
    op.create_table(
        'rate_limit_hits',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_limit_hits')),
    )
    with op.batch_alter_table('rate_limit_hits') as batch:
        batch.create_index('ix_rate_limit_hits_key_at', ['key', 'at'], unique=False)
        batch.create_index(op.f('ix_rate_limit_hits_expires_at'), ['expires_at'], unique=False)
    exports = sa.table('export_jobs', sa.column('status', sa.String), sa.column('error', sa.Text),
                       sa.column('finished_at', app.db.UTCDateTime(timezone=True)))
    op.execute(exports.update().where(exports.c.status.in_(('queued', 'running')))
               .values(status='failed', error=INTERRUPTED, finished_at=datetime.now(UTC)))
    reports = sa.table('export_jobs', sa.column('report_status', sa.String))
    op.execute(reports.update().where(reports.c.report_status == 'running')
               .values(report_status='failed'))


def downgrade() -> None:
    with op.batch_alter_table('rate_limit_hits') as batch:
        batch.drop_index(op.f('ix_rate_limit_hits_expires_at'))
        batch.drop_index('ix_rate_limit_hits_key_at')
    op.drop_table('rate_limit_hits')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_index(op.f('ix_jobs_subject'))
        batch.drop_index('ix_jobs_status_run_after')
    op.drop_table('jobs')
