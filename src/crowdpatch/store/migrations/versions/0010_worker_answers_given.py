"""answer path: each worker's answer count kept on its row, not counted on every answer

An answer, a hand-out and a session's progress all need how many answers the worker has given
(the session quota, the too-fast rule). Counted from the answer table, that read grew with the
worker's history: 1.4 ms of PostgreSQL per read at 20,000 answers, on every answer. The count now
lives on the worker row (``worker.answers_given``), written by the statement that stores the
answer (and by undo), so the read is one row whatever the history. Existing rows are counted once
here.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COUNTED = "(SELECT count(*) FROM answer WHERE worker_id = p_worker)"
"""How crowdpatch_answering (migration 0008) read the worker's answer count."""


def _answering_of_0008() -> str:
    """The function as migration 0008 wrote it (its text lives there alone)."""
    return context.script.get_revision("0008").module.ANSWERING


def upgrade() -> None:
    op.add_column("worker", sa.Column("answers_given", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE worker SET answers_given = (SELECT count(*) FROM answer WHERE answer.worker_id = worker.id)"
        " WHERE EXISTS (SELECT 1 FROM answer WHERE answer.worker_id = worker.id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        answering = _answering_of_0008()
        assert COUNTED in answering
        op.execute(answering.replace(COUNTED, "answers_given"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_answering_of_0008())
    with op.batch_alter_table("worker") as batch:
        batch.drop_column("answers_given")
