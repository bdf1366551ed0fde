"""The server's planner: the paper's question scheme, with every decision made in the database.

Any number of server processes share one store. Handing out a question is one transaction that
picks the highest-priority open question this worker has not seen whose answers plus live leases
are below what it wants, locks it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent
workers spread over questions instead of queueing on one; SQLite has a single writer, serialized
here by a process lock), re-counts under the lock and leases it. Storing an answer locks the
question the same way, so a question never gets more answers than wanted (gold aside), and
whatever the answer decides is written by :func:`close_question` in the same transaction.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from sqlalchemy import and_, case, delete, exists, func, select
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.decisions import close_question
from crowdpatch.crowd.planner import AnswerRejected, Assignment, validate_value, votes_target
from crowdpatch.crowd.quality_control import record_answer_quality
from crowdpatch.crowd.tasks import question_text
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow, WorkerRow

Mode = Literal["patch", "polygon"]


class NotLeased(AnswerRejected):
    """The task is not (or no longer) this worker's to answer."""


class TooManyHeld(RuntimeError):
    """The worker holds as many unanswered questions as it may."""


class WorkerStopped(RuntimeError):
    """The worker fell below the quality bar and gets no more questions."""


@dataclass(frozen=True)
class StoredAnswer:
    answer_id: int
    task_id: int
    duplicate: bool
    task_done: bool
    worker_stopped: bool
    answers_given: int


def validate_polygon(value: Any, width: int, height: int) -> dict[str, list[list[float]]]:
    points = value.get("polygon") if isinstance(value, dict) else None
    if not isinstance(points, list) or len(points) < 3:
        raise AnswerRejected('a polygon answer is {"polygon": [[x, y], ...]} with at least 3 points')
    clean = []
    for point in points:
        if not (isinstance(point, list) and len(point) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise AnswerRejected("every polygon point is [x, y]")
        x, y = float(point[0]), float(point[1])
        if not (0 <= x <= width and 0 <= y <= height):
            raise AnswerRejected(f"polygon point {point} outside the {width} x {height} image")
        clean.append([round(x, 2), round(y, 2)])
    return {"polygon": clean}


class StorePlanner:
    """Leases and answers for one project, safe across threads and processes."""

    MAX_HELD = 4
    """Live unanswered leases one worker may hold: on screen, prefetched, answers in flight."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        project_id: int,
        config: ProjectConfig,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        self.sessions = sessions
        self.project_id = project_id
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()
        self.postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self._sqlite_writer = threading.Lock()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        if self.postgres:
            with self.sessions.begin() as session:
                yield session
            return
        with self._sqlite_writer, self.sessions.begin() as session:
            yield session

    # -- counting ------------------------------------------------------------------------------

    def _effective_values(self, session: Session, task_id: int) -> list[Any]:
        """Answers that count toward a question (a stopped worker's do not), oldest first."""
        return list(
            session.scalars(
                select(AnswerRow.value)
                .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
                .where(AnswerRow.task_id == task_id, WorkerRow.banned.is_(False))
                .order_by(AnswerRow.id)
            )
        )

    def _live_leases(self, session: Session, task_id: int, now: float, other_than: int | None = None) -> int:
        query = select(func.count()).select_from(LeaseRow).where(LeaseRow.task_id == task_id, LeaseRow.expires_at > now)
        if other_than is not None:
            query = query.where(LeaseRow.worker_id != other_than)
        return session.scalar(query) or 0

    def _wants_more(self, session: Session, task: TaskRow, now: float, other_than: int | None = None) -> bool:
        values = self._effective_values(session, task.id)
        target = votes_target(values, task.votes_wanted, self.config.crowd.early_stop)
        return len(values) + self._live_leases(session, task.id, now, other_than) < target

    # -- asking --------------------------------------------------------------------------------

    def next_task(self, worker_id: int, mode: Mode = "patch", exclude: tuple[int, ...] = ()) -> Assignment | None:
        """Lease a question to the worker (or re-issue one it holds); None when it has nothing left.

        ``exclude`` names held questions the client already shows (so a prefetch gets another).
        """
        now = self.clock()
        with self._write() as session:
            worker = session.get(WorkerRow, worker_id)
            if worker is None or worker.banned:
                raise WorkerStopped(worker.stopped_reason if worker else "unknown worker")
            held = self._held(session, worker_id, now, exclude)
            if held is not None:
                return held
            held_count = session.scalar(
                select(func.count()).select_from(LeaseRow).where(
                    LeaseRow.worker_id == worker_id,
                    LeaseRow.expires_at > now,
                    ~exists().where(AnswerRow.task_id == LeaseRow.task_id, AnswerRow.worker_id == worker_id),
                )
            )
            if held_count >= self.MAX_HELD:
                raise TooManyHeld(f"you hold {held_count} unanswered questions; answer them first")
            task = None
            if mode == "patch" and self.config.crowd.gold_rate > 0 and self.rng.random() < self.config.crowd.gold_rate:
                task = self._pick_gold(session, worker_id)
            if task is None:
                task = self._pick_open(session, worker_id, mode, now)
            if task is None:
                return None
            expires_at = now + self.config.crowd.lease_seconds
            session.add(LeaseRow(task_id=task.id, worker_id=worker_id, expires_at=expires_at, leased_at=now))
            return self._assignment(task, expires_at)

    def _held(self, session: Session, worker_id: int, now: float, exclude: tuple[int, ...]) -> Assignment | None:
        """A live lease the worker holds and has not answered (after a reload), with a fresh expiry."""
        lease = session.scalar(
            select(LeaseRow)
            .where(
                LeaseRow.worker_id == worker_id,
                LeaseRow.expires_at > now,
                LeaseRow.task_id.notin_(exclude) if exclude else True,
                ~exists().where(AnswerRow.task_id == LeaseRow.task_id, AnswerRow.worker_id == worker_id),
            )
            .order_by(LeaseRow.id)
            .limit(1)
        )
        if lease is None:
            return None
        task = session.get(TaskRow, lease.task_id)
        if task.state != "open" and task.kind != "gold":
            return None
        lease.expires_at = now + self.config.crowd.lease_seconds
        return self._assignment(task, lease.expires_at)

    def _unseen(self, worker_id: int):
        return and_(
            ~exists().where(AnswerRow.task_id == TaskRow.id, AnswerRow.worker_id == worker_id),
            ~exists().where(LeaseRow.task_id == TaskRow.id, LeaseRow.worker_id == worker_id),
        )

    def _pick_gold(self, session: Session, worker_id: int) -> TaskRow | None:
        has_open = session.scalar(
            select(TaskRow.id).where(
                TaskRow.project_id == self.project_id, TaskRow.state == "open", TaskRow.kind.in_(("verify", "patch", "grid"))
            ).limit(1)
        )
        if has_open is None:
            return None
        return session.scalar(
            select(TaskRow)
            .where(TaskRow.project_id == self.project_id, TaskRow.kind == "gold", self._unseen(worker_id))
            .order_by(func.random())
            .limit(1)
        )

    def _pick_open(self, session: Session, worker_id: int, mode: Mode, now: float) -> TaskRow | None:
        """The first open question in priority order that still wants an answer, locked."""
        answers = (
            select(func.count())
            .select_from(AnswerRow)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(AnswerRow.task_id == TaskRow.id, WorkerRow.banned.is_(False))
            .correlate(TaskRow)
            .scalar_subquery()
        )
        leases = (
            select(func.count())
            .select_from(LeaseRow)
            .where(LeaseRow.task_id == TaskRow.id, LeaseRow.expires_at > now)
            .correlate(TaskRow)
            .scalar_subquery()
        )
        if self.config.crowd.early_stop:
            # votes_target() in SQL: two while the first two answers are not in (or agree).
            wanted = case((answers >= 2, TaskRow.votes_wanted), (TaskRow.votes_wanted < 2, TaskRow.votes_wanted), else_=2)
        else:
            wanted = TaskRow.votes_wanted
        kinds = ("polygon",) if mode == "polygon" else ("verify", "patch", "grid")
        query = (
            select(TaskRow)
            .where(
                TaskRow.project_id == self.project_id,
                TaskRow.state == "open",
                TaskRow.kind.in_(kinds),
                self._unseen(worker_id),
                answers + leases < wanted,
            )
            .order_by(case((TaskRow.kind == "verify", 0), else_=1), TaskRow.level, TaskRow.id)
            .limit(1)
        )
        skipped: list[int] = []
        # SKIP LOCKED spreads concurrent workers over questions; when everything wanted is locked
        # by someone else at this instant, a plain lock waits instead of wrongly answering "none".
        for skip_locked in (True, False) if self.postgres else (False,):
            while True:
                attempt = query.where(TaskRow.id.notin_(skipped)) if skipped else query
                if self.postgres:
                    attempt = attempt.with_for_update(skip_locked=skip_locked, of=TaskRow)
                task = session.scalar(attempt)
                if task is None:
                    break
                # Re-count under the lock: a lease committed after this statement's snapshot is visible now.
                session.refresh(task)
                if task.state == "open" and self._wants_more(session, task, now):
                    return task
                skipped.append(task.id)
        return None

    def _assignment(self, task: TaskRow, expires_at: float) -> Assignment:
        kind = "patch" if task.kind == "gold" else task.kind
        return Assignment(
            task_id=task.id,
            kind=kind,
            image_id=task.image_id,
            box=Box.from_list(task.box),
            grid_size=task.grid_size,
            question=question_text(kind, self.config.target),
            lease_expires_at=expires_at,
        )

    # -- answering -----------------------------------------------------------------------------

    def submit(
        self,
        worker_id: int,
        task_id: int,
        value: Any,
        *,
        client_id: str,
        client_ms: int | None,
        time_source: str = "measured",
    ) -> StoredAnswer:
        """Store one answer and everything it decides; the same ``client_id`` again returns the stored one."""
        now = self.clock()
        with self._write() as session:
            existing = session.scalar(select(AnswerRow).where(AnswerRow.client_id == client_id))
            if existing is not None:
                if existing.worker_id != worker_id or existing.task_id != task_id:
                    raise NotLeased(f"client id {client_id!r} was used for another answer")
                task = session.get(TaskRow, task_id)
                given = self._answers_given(session, worker_id, up_to=existing.id)
                return StoredAnswer(existing.id, task_id, True, task.state == "done", False, given)
            task = session.get(TaskRow, task_id, with_for_update=self.postgres)
            lease = session.scalar(select(LeaseRow).where(LeaseRow.task_id == task_id, LeaseRow.worker_id == worker_id))
            if task is None or task.project_id != self.project_id or lease is None:
                raise NotLeased(f"task {task_id} is not leased to you")
            if task.kind == "polygon":
                image = session.get(ImageRow, task.image_id)
                value = validate_polygon(value, image.width, image.height)
            else:
                value = validate_value(task.kind, value, task.grid_size)
            if task.kind != "gold":
                if task.state != "open":
                    raise NotLeased(f"task {task_id} already has all its answers")
                if lease.expires_at <= now and not self._wants_more(session, task, now, other_than=worker_id):
                    # A late answer is honest work; it is refused only when it would over-ask the question.
                    raise NotLeased(f"your lease on task {task_id} expired and others answered it")
            shown_at = lease.leased_at if lease.leased_at is not None else now
            seconds = client_ms / 1000.0 if client_ms is not None and client_ms > 0 else now - shown_at
            answer = AnswerRow(
                task_id=task_id,
                worker_id=worker_id,
                value=value,
                client_id=client_id,
                shown_at=shown_at,
                answered_at=now,
                client_ms=client_ms,
                seconds=seconds,
                time_source=time_source,
            )
            session.add(answer)
            session.delete(lease)
            session.flush()
            given = self._answers_given(session, worker_id)
            worker = session.get(WorkerRow, worker_id)
            stopped = record_answer_quality(worker, task.kind, task.gold_answer, value, seconds, self.config.crowd, given)
            done = False
            if task.kind != "gold":
                values = self._effective_values(session, task_id)
                if len(values) >= votes_target(values, task.votes_wanted, self.config.crowd.early_stop):
                    close_question(session, self.project_id, self.config, task_id, values)
                    done = True
            return StoredAnswer(answer.id, task_id, False, done, stopped or worker.banned, given)

    def _answers_given(self, session: Session, worker_id: int, up_to: int | None = None) -> int:
        query = select(func.count()).select_from(AnswerRow).where(AnswerRow.worker_id == worker_id)
        if up_to is not None:
            query = query.where(AnswerRow.id <= up_to)
        return session.scalar(query) or 0

    def answers_given(self, worker_id: int) -> int:
        with self.sessions() as session:
            return self._answers_given(session, worker_id)

    def undo_last(self, worker_id: int) -> Assignment:
        """Take back the worker's last answer while its question is still open; the question is leased back."""
        now = self.clock()
        with self._write() as session:
            answer = session.scalar(
                select(AnswerRow).where(AnswerRow.worker_id == worker_id).order_by(AnswerRow.id.desc()).limit(1)
            )
            if answer is None:
                raise NotLeased("nothing to undo")
            task = session.get(TaskRow, answer.task_id, with_for_update=self.postgres)
            worker = session.get(WorkerRow, worker_id)
            if worker.banned:
                raise WorkerStopped(worker.stopped_reason)
            if task.kind != "gold" and task.state != "open":
                raise NotLeased("that question is already decided; its answer can no longer be undone")
            if answer.seconds < self.config.crowd.min_seconds_per_answer:
                worker.too_fast = max(0, (worker.too_fast or 0) - 1)
            if task.kind == "gold":
                worker.gold_seen -= 1
                worker.gold_correct -= int(answer.value == task.gold_answer)
                worker.quality = (worker.gold_correct + 1) / (worker.gold_seen + 2) if worker.gold_seen else None
            session.delete(answer)
            session.flush()
            session.execute(delete(LeaseRow).where(LeaseRow.task_id == task.id, LeaseRow.worker_id == worker_id))
            expires_at = now + self.config.crowd.lease_seconds
            session.add(LeaseRow(task_id=task.id, worker_id=worker_id, expires_at=expires_at, leased_at=now))
            return self._assignment(task, expires_at)
