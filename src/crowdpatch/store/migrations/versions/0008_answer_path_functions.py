"""answer path: PostgreSQL functions that lock and then read, so an answer and its next question take few round trips

On PostgreSQL a statement that waits for a row lock still reads everything else from the snapshot it
took before waiting; so the dispatcher locked a question in one statement and read what the answer
needs in the next. A function takes a new snapshot for each statement it runs: one call locks and
then reads (``crowdpatch_answering``), or locks an image, closes one of its questions and tells
whether another is still open (``crowdpatch_close``), in one round trip. SQLite (one writer, no row locks)
needs none of them.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ANSWERING = """
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
                       finished_at IS NOT NULL AS finished,
                       (SELECT count(*) FROM answer WHERE worker_id = p_worker) AS given
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

CLOSE = """
CREATE OR REPLACE FUNCTION crowdpatch_close(
    p_task integer, p_image integer, p_decision text, p_outside text[]
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM image WHERE id = p_image FOR UPDATE;
    DELETE FROM lease WHERE task_id = p_task;
    UPDATE task SET state = 'done', decision = p_decision, leases_count = 0 WHERE id = p_task;
    RETURN EXISTS (
        SELECT 1 FROM task WHERE image_id = p_image AND kind <> ALL(p_outside) AND state = 'open'
    );
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ANSWERING)
    op.execute(CLOSE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS crowdpatch_answering(integer, integer, text, boolean)")
    op.execute("DROP FUNCTION IF EXISTS crowdpatch_close(integer, integer, text, text[])")
