"""answer path: an image's decisions serialized by a lock that leaves its key free (PostgreSQL)

Closing a question locks its image (``crowdpatch_close``, migration 0008), so two decisions on one
image never both create their shared children. The lock was ``FOR UPDATE``, which also blocks
``FOR KEY SHARE``: the lock PostgreSQL's foreign-key check takes on the image of every question
inserted, or updated in the transaction that inserted it. Answers grouped in one transaction
(``DatabaseDispatcher.run_grouped``) do both for several images, so a group could wait for another's
decision on an image while that one waited for the first group's. ``FOR NO KEY UPDATE`` serializes
the decisions all the same (it conflicts with itself) and leaves references to the image free (the
image's key never changes). ``closing.lock_image`` takes the same lock.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_CLOSE = """
CREATE OR REPLACE FUNCTION crowdpatch_close(
    p_task integer, p_image integer, p_decision text, p_outside text[]
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM image WHERE id = p_image FOR {lock};
    DELETE FROM lease WHERE task_id = p_task;
    UPDATE task SET state = 'done', decision = p_decision, leases_count = 0 WHERE id = p_task;
    RETURN EXISTS (
        SELECT 1 FROM task WHERE image_id = p_image AND kind <> ALL(p_outside) AND state = 'open'
    );
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CLOSE.format(lock="NO KEY UPDATE"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CLOSE.format(lock="UPDATE"))
