"""answer path: fewer writes per answer (redundant indexes, unchecked lease and parent references)

Each answer inserts an answer row, deletes a lease, inserts the worker's next lease and updates the
counters of two question rows; a decision also inserts the new questions it opens. PostgreSQL spent a
share of each answer on work that guards nothing the dispatcher does not already guarantee:

- ``ix_answer_task_id`` and ``ix_lease_task_id``: the unique (task, worker) index of each table starts
  with the question, so it answers every lookup by question; the single-column copies only cost an
  index insert per row (both backends).
- The foreign keys of ``lease`` (to its question and its worker) and of a question to the question that
  opened it (``task.parent_id``): PostgreSQL checks each inserted row with a query of its own, which
  also locks the referenced row (``FOR KEY SHARE``). A lease is inserted by the statement that picked
  and locked its question, for a worker whose row the same transaction read, and a new question by the
  transaction that holds its parent locked; none of these rows is ever deleted. The answer's own
  references, and a question's to its project, image and region, keep their checks. SQLite checks a
  reference with an index probe inside the process, and changes a table's constraints only by
  rebuilding it: its foreign keys stay.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

REDUNDANT_INDEXES = (("ix_answer_task_id", "answer"), ("ix_lease_task_id", "lease"))
UNCHECKED_REFERENCES = (
    ("lease_task_id_fkey", "lease", "task_id", "task"),
    ("lease_worker_id_fkey", "lease", "worker_id", "worker"),
    ("task_parent_id_fkey", "task", "parent_id", "task"),
)


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    for index, table in REDUNDANT_INDEXES:
        op.drop_index(index, table_name=table)
    if _postgres():
        for name, table, _column, _referred in UNCHECKED_REFERENCES:
            op.drop_constraint(name, table, type_="foreignkey")


def downgrade() -> None:
    if _postgres():
        for name, table, column, referred in UNCHECKED_REFERENCES:
            op.create_foreign_key(name, table, referred, [column], ["id"])
    for index, table in REDUNDANT_INDEXES:
        op.create_index(index, table, ["task_id"])
