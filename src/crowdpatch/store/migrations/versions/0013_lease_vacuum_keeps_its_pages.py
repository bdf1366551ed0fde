"""lease table: vacuums keep its empty pages instead of truncating them (PostgreSQL)

The server vacuums the lease table once a second (``store.lease_vacuum``). A vacuum that finds empty
pages at the end of a table truncates them, and truncating takes the table's ``ACCESS EXCLUSIVE`` lock,
the one lock every answer's statements conflict with. The vacuum only tries for it (``ConditionalLock``)
and backs off while others hold the table, for up to five seconds: under load the lease table is never
free for long, so such a vacuum ran for seconds (0.6-3.1 s, against a few milliseconds otherwise)
retrying for a lock that, once had, holds every answer's statements back until the vacuum sees them
waiting (it looks every 20 ms). The lease table holds a few dozen live rows and its empty pages are
reused by the next leases, so it is not truncated at all: ``vacuum_truncate = false`` holds for the
server's vacuums and autovacuum's.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE lease SET (vacuum_truncate = false)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE lease RESET (vacuum_truncate)")
