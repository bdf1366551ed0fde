"""lease: which server process handed it out, and its question's image

Two server processes that hand out questions of the same image meet on its locks: an answer's question
is locked by the other process's group (the answer then runs alone after its own group, waiting for that
commit), and each decision on the image waits for the other group's (the image lock of
``crowdpatch_close``). A lease now names the process that handed it out (``server``: a number each
dispatcher draws when it starts) and carries its question's image, so the usual hand-out of a process
passes over the images the other processes' workers are answering (``statements.hand_out``). Both
columns are nullable: a lease written before this migration names no process and holds no image for it.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lease") as batch:
        batch.add_column(sa.Column("server", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("image_id", sa.Integer(), nullable=True))
        batch.create_index("ix_lease_image_id", ["image_id"])


def downgrade() -> None:
    with op.batch_alter_table("lease") as batch:
        batch.drop_index("ix_lease_image_id")
        batch.drop_column("image_id")
        batch.drop_column("server")
