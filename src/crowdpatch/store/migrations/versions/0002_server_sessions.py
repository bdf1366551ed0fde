"""server: lease hand-out time, why a worker was stopped, session completion

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lease") as batch:
        batch.add_column(sa.Column("leased_at", sa.Float(), nullable=True))
        batch.create_index("ix_lease_worker_id", ["worker_id"])
    with op.batch_alter_table("worker") as batch:
        batch.add_column(sa.Column("stopped_reason", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("worker") as batch:
        batch.drop_column("finished_at")
        batch.drop_column("stopped_reason")
    with op.batch_alter_table("lease") as batch:
        batch.drop_index("ix_lease_worker_id")
        batch.drop_column("leased_at")
