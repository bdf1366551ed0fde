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
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ANSWERING = """
CREATE OR REPLACE FUNCTION crowdpatch_answering(
    p_task integer, p_worker integer, p_client text, p_lock_worker boolean
) RETURNS json LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM task WHERE id = p_task FOR UPDATE;
    IF p_lock_worker THEN
        PERFORM 1 FROM worker WHERE id = p_worker FOR UPDATE;
    END IF;
    RETURN json_build_object(
        'replay', EXISTS (SELECT 1 FROM answer a WHERE a.client_id = p_client),
        'task', (
            SELECT row_to_json(q) FROM (
                SELECT t.project_id, t.kind, t.state, t.image_id, t.grid_size, t.gold_answer, t.votes_wanted,
                       t.spec, t.region_id, t.key, l.id AS lease_id, l.expires_at, l.leased_at
                FROM task t LEFT JOIN lease l ON l.task_id = t.id AND l.worker_id = p_worker
                WHERE t.id = p_task
            ) q
        ),
        'worker', (
            SELECT row_to_json(q) FROM (
                SELECT attributes, gold_seen, gold_correct, too_fast, quality, banned, stopped_reason,
                       finished_at IS NOT NULL AS finished, {given} AS given
                FROM worker WHERE id = p_worker
            ) q
        ),
        'counted', (
            SELECT coalesce(json_agg(json_build_array(a.worker_id, a.value) ORDER BY a.id), '[]'::json)
            FROM answer a JOIN worker w ON w.id = a.worker_id
            WHERE a.task_id = p_task AND NOT w.banned
        )
    );
END
$$
"""
"""crowdpatch_answering as migration 0008 wrote it, with how it reads the worker's answer count left open."""


def upgrade() -> None:
    op.add_column("worker", sa.Column("answers_given", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE worker SET answers_given = (SELECT count(*) FROM answer WHERE answer.worker_id = worker.id)"
        " WHERE EXISTS (SELECT 1 FROM answer WHERE answer.worker_id = worker.id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_ANSWERING.format(given="answers_given"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_ANSWERING.format(given="(SELECT count(*) FROM answer WHERE worker_id = p_worker)"))
    with op.batch_alter_table("worker") as batch:
        batch.drop_column("answers_given")
