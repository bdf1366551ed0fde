"""next task: a study's gold questions by index (a gold check picks one from a random place, not by sorting them all)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_task_gold",
        "task",
        ["project_id", "id"],
        sqlite_where=sa.text("kind = 'gold'"),
        postgresql_where=sa.text("kind = 'gold'"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_gold", table_name="task")
