"""identity: a random uid per project (tokens and invites are bound to it), a worker's platform evidence
(arrivals under one id without it are workers of their own), the session each answer came through

Revision ID: 0006
Revises: 0005
"""

import uuid

import sqlalchemy as sa
from alembic import op

from crowdpatch.store.models import worker_evidence

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_WORKER_KEY = ["project_id", "platform", "external_id"]
NEW_WORKER_KEY = ["project_id", "platform", "external_id", "evidence"]
UNNAMED = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
"""Names SQLite's reflected unnamed unique constraints, so batch mode can drop one (revision 0001 named none)."""


def _worker_key_name(bind) -> str:
    """The name of revision 0001's unique (project_id, platform, external_id): PostgreSQL named it, SQLite did not."""
    for constraint in sa.inspect(bind).get_unique_constraints("worker"):
        if constraint["column_names"] == OLD_WORKER_KEY and constraint["name"]:
            return constraint["name"]
    return UNNAMED["uq"] % {"table_name": "worker", "column_0_N_name": "_".join(OLD_WORKER_KEY)}


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("project") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=36), nullable=True))
    project = sa.table("project", sa.column("id", sa.Integer), sa.column("uid", sa.String))
    for (project_id,) in bind.execute(sa.select(project.c.id)).all():
        bind.execute(project.update().where(project.c.id == project_id).values(uid=str(uuid.uuid4())))
    with op.batch_alter_table("project") as batch:
        batch.alter_column("uid", existing_type=sa.String(length=36), nullable=False)
        batch.create_unique_constraint("uq_project_uid", ["uid"])

    key_name = _worker_key_name(bind)
    with op.batch_alter_table("worker", naming_convention=UNNAMED) as batch:
        batch.add_column(sa.Column("evidence", sa.String(length=200), nullable=True))
        batch.drop_constraint(key_name, type_="unique")
        batch.create_unique_constraint("uq_worker_identity", NEW_WORKER_KEY)
    worker = sa.table(
        "worker",
        sa.column("id", sa.Integer),
        sa.column("platform", sa.String),
        sa.column("attributes", sa.JSON),
        sa.column("evidence", sa.String),
    )
    for worker_id, platform, attributes in bind.execute(
        sa.select(worker.c.id, worker.c.platform, worker.c.attributes)
    ).all():
        evidence = worker_evidence(platform, attributes or {})
        if evidence is not None:
            bind.execute(worker.update().where(worker.c.id == worker_id).values(evidence=evidence))

    with op.batch_alter_table("answer") as batch:
        batch.add_column(sa.Column("worker_session", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answer") as batch:
        batch.drop_column("worker_session")
    with op.batch_alter_table("worker") as batch:
        batch.drop_constraint("uq_worker_identity", type_="unique")
        batch.create_unique_constraint("uq_worker_project_id_platform_external_id", OLD_WORKER_KEY)
        batch.drop_column("evidence")
    with op.batch_alter_table("project") as batch:
        batch.drop_constraint("uq_project_uid", type_="unique")
        batch.drop_column("uid")
