"""next task: gold questions out of the way of the open pipeline questions

Gold questions stay open all study long. Asked before each gold check, "is any pipeline question
open?" walked the open questions' index past every finished image's gold ones (97 ms at 100,000
images): a partial index over open pipeline questions answers it at its first entry. And a hand-out
walks the open questions in priority order, where gold questions sat among the windows: they now
come last (``crowd.kinds.GOLD_PRIORITY``).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OPEN_PIPELINE = "state = 'open' AND kind NOT IN ('gold', 'polygon')"
"""crowd.kinds.OPEN_PIPELINE_SQL as it was when this migration was written."""


GOLD_PRIORITY = 9
"""crowd.kinds.GOLD_PRIORITY as it was when this migration was written."""


def upgrade() -> None:
    op.execute(f"UPDATE task SET priority = {GOLD_PRIORITY} WHERE kind = 'gold'")
    op.create_index(
        "ix_task_open_pipeline",
        "task",
        ["project_id", "state"],
        sqlite_where=sa.text(OPEN_PIPELINE),
        postgresql_where=sa.text(OPEN_PIPELINE),
    )


def downgrade() -> None:
    op.drop_index("ix_task_open_pipeline", table_name="task")
    op.execute("UPDATE task SET priority = 1 WHERE kind = 'gold'")
