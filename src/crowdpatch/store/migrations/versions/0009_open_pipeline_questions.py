"""next task: whether a study still has an open pipeline question, by an index that leaves gold questions out

Gold questions stay open all study long; asked before each gold check, "is any pipeline question
open?" walked the open questions' index past every finished image's gold ones (97 ms at 100,000
images). A partial index over open pipeline questions answers it at its first entry.

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


def upgrade() -> None:
    op.create_index(
        "ix_task_open_pipeline",
        "task",
        ["project_id", "state"],
        sqlite_where=sa.text(OPEN_PIPELINE),
        postgresql_where=sa.text(OPEN_PIPELINE),
    )


def downgrade() -> None:
    op.drop_index("ix_task_open_pipeline", table_name="task")
