"""SQLAlchemy 2 models: everything a project asks and every answer it gets.

The store is the single source of truth: a run killed at any moment resumes from it, and every
acknowledged answer is in it (one transaction per answer).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from crowdpatch.crowd.kinds import OPEN_PIPELINE_SQL, task_priority


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def new_project_uid() -> str:
    return str(uuid.uuid4())


class ProjectRow(Base):
    __tablename__ = "project"

    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True, default=new_project_uid)
    """Random, made once per project: what worker tokens, invites and image links are bound to. The row id is
    not enough: two SQLite projects both have project 1, and a token must not be good in a project that
    merely shares the secrets that signed it."""
    name: Mapped[str] = mapped_column(String(200), unique=True)
    target: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ImageRow(Base):
    """One image; ``stage`` walks new -> verify -> patch -> done (or error)."""

    __tablename__ = "image"
    __table_args__ = (UniqueConstraint("project_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"), index=True)
    path: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(200))
    split: Mapped[str] = mapped_column(String(20), default="train")
    groups: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mask_path: Mapped[str | None] = mapped_column(Text)
    saliency_path: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(20), default="new", index=True)
    error: Mapped[str | None] = mapped_column(Text)

    regions: Mapped[list["RegionRow"]] = relationship(back_populates="image", order_by="RegionRow.id")


class RegionRow(Base):
    """A step-1 cluster (or the whole image) and the crowd's verdict on it."""

    __tablename__ = "region"

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"), index=True)
    source: Mapped[str] = mapped_column(String(20))  # saliency | whole
    box: Mapped[list[Any]] = mapped_column()
    outline: Mapped[list[Any]] = mapped_column(default=list)
    mass: Mapped[float] = mapped_column(Float, default=0.0)
    verdict: Mapped[str | None] = mapped_column(String(20))  # None (pending) | accepted | rejected

    image: Mapped[ImageRow] = relationship(back_populates="regions")


def _default_priority(context) -> int:
    return task_priority(context.get_current_parameters()["kind"])


class TaskRow(Base):
    """One question. ``key`` names a window ("level:ix:iy"), "grid", or "verify"; shared windows are one task.

    ``answers_count``, ``leases_count`` and ``answers_disagree`` are kept by the database dispatcher
    (crowd/dispatch/database.py) in the transaction that changes what they count, so handing out a
    question is one walk of the ``ix_task_queue`` index instead of counting answers and leases of
    every open question; ``DatabaseDispatcher.sync_counters`` recomputes them from the answer and
    lease rows (after another writer, such as the in-process simulator, or a ban).
    """

    __tablename__ = "task"
    __table_args__ = (
        UniqueConstraint("region_id", "kind", "key"),
        Index("ix_task_open", "project_id", "state"),
        # Open questions in hand-out order; partial, so closed questions cost the queue nothing.
        Index(
            "ix_task_queue",
            "project_id",
            "priority",
            "level",
            "id",
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        # "Is this image done?", asked whenever a question closes: a walk of the image's open
        # questions instead of all of them (hundreds per image, nearly all closed late in a study).
        Index(
            "ix_task_open_per_image",
            "image_id",
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
        # "Is any pipeline question open?", asked before a gold check: gold questions stay open all study
        # long, so the open questions' index would pass every finished image's gold ones first.
        Index(
            "ix_task_open_pipeline",
            "project_id",
            "state",  # an equality as many as ix_task_open's, so SQLite prefers this, the smaller one
            sqlite_where=text(OPEN_PIPELINE_SQL),
            postgresql_where=text(OPEN_PIPELINE_SQL),
        ),
        # A gold check starts at a random gold question and walks on to one the worker has not seen:
        # sorting every gold question at random cost a scan of them all (two per image) per check.
        Index(
            "ix_task_gold",
            "project_id",
            "id",
            sqlite_where=text("kind = 'gold'"),
            postgresql_where=text("kind = 'gold'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"), index=True)
    region_id: Mapped[int | None] = mapped_column(ForeignKey("region.id"))
    kind: Mapped[str] = mapped_column(String(20))  # one of crowd.kinds.KINDS
    key: Mapped[str] = mapped_column(String(40))
    level: Mapped[int] = mapped_column(Integer, default=0)
    box: Mapped[list[Any]] = mapped_column()
    grid_size: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("task.id"))  # unchecked on PostgreSQL (migration 0011)
    votes_wanted: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default="open")  # open | done
    decision: Mapped[str | None] = mapped_column(String(20))
    """Once done: yes | no; for extreme points "points" or "absent"; for a pick the chosen candidate or "none"."""
    gold_answer: Mapped[Any | None] = mapped_column(JSON)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Adaptive grids: ``{"resolution": R}`` (votes count on an R x R lattice) and, for a boundary
    round, ``"active": [cells]`` (only these cells are shown clickable and voted on)."""
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    priority: Mapped[int] = mapped_column(Integer, default=_default_priority)
    """Hand-out order between kinds (:func:`task_priority`); then ``level``, then ``id``."""
    answers_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Answers that count: those of workers not stopped."""
    leases_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Lease rows on the question, expired ones included until their slot is handed to someone else."""
    answers_disagree: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """The first two counting answers differ (early stop then wants all ``votes_wanted``)."""


EVIDENCE_ATTRIBUTE = {"prolific": "session_id", "mturk": "assignment_id", "local": "invite"}
"""The worker attribute that is each platform's evidence of the person behind a worker id: Prolific's
SESSION_ID (one per participant and study), MTurk's assignmentId (one per accepted assignment), the label
of the local invite the worker came with. Each reaches only the worker (in the link the platform opens)."""


def worker_evidence(platform: str, attributes: dict[str, Any]) -> str | None:
    """A worker's evidence (``WorkerRow.evidence``) from the attributes it arrived with; None when it showed none.

    The requester's simulated workers need the API key to arrive at all: their id is evidence enough ("").
    """
    if platform == "simulated":
        return ""
    key = EVIDENCE_ATTRIBUTE.get(platform)
    value = attributes.get(key) if key else None
    return str(value) if value else None


class WorkerRow(Base):
    """One worker as quality control knows it: the unit of gold accuracy, speed checks, bans and aggregation.

    A worker is a platform id *and* the platform's evidence of the person behind it (``evidence``):
    arrivals that show the same evidence are one worker, so a reload continues where it stopped; one
    that names the same id without it is a worker of its own, whose answers and ban touch nobody else.
    """

    __tablename__ = "worker"
    __table_args__ = (UniqueConstraint("project_id", "platform", "external_id", "evidence"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    platform: Mapped[str] = mapped_column(String(20))  # simulated | local | prolific | mturk
    external_id: Mapped[str] = mapped_column(String(200))
    evidence: Mapped[str | None] = mapped_column(String(200))
    """What the platform showed beside the id (:func:`worker_evidence`). NULL: nothing, so the row is that
    arrival's alone (NULLs never collide in the unique constraint)."""
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    gold_seen: Mapped[int] = mapped_column(Integer, default=0)
    gold_correct: Mapped[int] = mapped_column(Integer, default=0)
    too_fast: Mapped[int] = mapped_column(Integer, default=0)
    quality: Mapped[float | None] = mapped_column(Float)
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    stopped_reason: Mapped[str | None] = mapped_column(String(40))  # gold | too_fast, when banned
    finished_at: Mapped[float | None] = mapped_column(Float)  # epoch seconds the session was completed
    answers_given: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Its answers in the answer table, kept by whatever stores or takes one back (the dispatchers, undo), so
    the answer path reads one row instead of counting a history that grows all study long."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LeaseRow(Base):
    """A question held by one worker until it answers or the lease expires."""

    __tablename__ = "lease"
    __table_args__ = (UniqueConstraint("task_id", "worker_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Looked up by question through the unique (task_id, worker_id) index. PostgreSQL does not check these two
    # references (migration 0011): the statement that inserts a lease has just locked its question.
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # seconds on the run's clock (simulated or epoch)
    leased_at: Mapped[float | None] = mapped_column(Float)  # when the server handed it out (shown-at of the answer)
    # The server process that handed it out (a number each dispatcher draws) and its question's image: a
    # process's usual hand-out passes over images other processes' workers hold (migration 0014).
    server: Mapped[int | None] = mapped_column(Integer)
    image_id: Mapped[int | None] = mapped_column(Integer, index=True)


class AnswerRow(Base):
    """One acknowledged answer with the human time it cost (modeled for simulated workers)."""

    __tablename__ = "answer"
    __table_args__ = (UniqueConstraint("task_id", "worker_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))  # by question: the unique (task_id, worker_id) index
    worker_id: Mapped[int] = mapped_column(ForeignKey("worker.id"), index=True)
    value: Mapped[Any] = mapped_column(JSON)
    client_id: Mapped[str] = mapped_column(String(100), unique=True)
    worker_session: Mapped[str | None] = mapped_column(String(32))
    """The worker session (its token's key) the answer came through: undo takes back only that session's
    answers. NULL for answers stored outside a session (the in-process simulator)."""
    shown_at: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[float] = mapped_column(Float)
    client_ms: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    time_source: Mapped[str] = mapped_column(String(10))  # modeled | measured


class MaskRow(Base):
    __tablename__ = "mask"
    __table_args__ = (UniqueConstraint("image_id", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"), index=True)
    source: Mapped[str] = mapped_column(String(20))  # patch | polygon | saliency | gt
    file: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    iou: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
