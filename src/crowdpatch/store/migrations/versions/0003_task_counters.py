"""task counters and the open-question queue index; lease expiry index

Revision ID: 0003
Revises: 0002

Handing out a question used to count answers and live leases of every open question with
correlated subqueries. The task row now carries its counts (kept by the server's planner in the
same transaction as the rows they count) and a ``priority`` column, so the next question is the
first row of a partial index over open questions. Existing rows are backfilled here: counts from
the answer and lease tables (answers of stopped workers do not count), ``answers_disagree`` from
the first two counting answers.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite supports it for columns with a constant default): a batch "move and
    # copy" would drop the task table, which the answers' foreign keys forbid.
    op.add_column("task", sa.Column("priority", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("task", sa.Column("answers_count", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("task", sa.Column("leases_count", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("task", sa.Column("answers_disagree", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_lease_expires_at", "lease", ["expires_at"])
    op.execute("UPDATE task SET priority = CASE WHEN kind = 'verify' THEN 0 ELSE 1 END")
    op.execute(
        "UPDATE task SET answers_count = (SELECT count(*) FROM answer JOIN worker ON worker.id = answer.worker_id"
        " WHERE answer.task_id = task.id AND NOT worker.banned),"
        " leases_count = (SELECT count(*) FROM lease WHERE lease.task_id = task.id)"
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT answer.task_id, answer.value FROM answer JOIN worker ON worker.id = answer.worker_id"
            " JOIN task ON task.id = answer.task_id WHERE NOT worker.banned AND task.answers_count >= 2"
            " ORDER BY answer.task_id, answer.id"
        )
    )
    as_text = bind.dialect.name == "sqlite"  # PostgreSQL's driver decodes json itself
    first_two: dict[int, list] = {}
    for task_id, value in rows:
        values = first_two.setdefault(task_id, [])
        if len(values) < 2:
            values.append(json.loads(value) if as_text else value)
    disagree = [task_id for task_id, values in first_two.items() if values[0] != values[1]]
    if disagree:
        bind.execute(
            sa.text("UPDATE task SET answers_disagree = :yes WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"yes": True, "ids": disagree},
        )
    op.create_index(
        "ix_task_queue",
        "task",
        ["project_id", "priority", "level", "id"],
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_queue", table_name="task")
    op.drop_index("ix_lease_expires_at", table_name="lease")
    for column in ("answers_disagree", "leases_count", "answers_count", "priority"):
        op.drop_column("task", column)
