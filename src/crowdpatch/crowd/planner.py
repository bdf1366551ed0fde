"""Which question a worker gets next, and what each answer sets in motion (the paper's fixed scheme).

Verification questions come first, then patch questions level by level. A question wants
``votes`` answers, or only two when the first two agree; answers in flight (leases) count toward
that, so a question is never over-asked. An answer is stored, and everything it decides (the
question done, the region verdicts, the children of a "yes" window) is written in the same
transaction: a run killed at any moment resumes from the store without asking anything twice.

The planner keeps the open questions in memory for speed; the store is the truth it loads from.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.decisions import NO, YES, votes_target
from crowdpatch.crowd.planners import planner_for
from crowdpatch.crowd.tasks import question_text, shown_kind, task_variant
from crowdpatch.crowd.quality_control import record_answer_quality
from crowdpatch.store.models import AnswerRow, LeaseRow, TaskRow, WorkerRow, task_priority


class AnswerRejected(ValueError):
    """An answer that cannot be accepted (not leased to this worker, malformed value, ...)."""


@dataclass
class OpenQuestion:
    """A question still collecting answers, as the planner tracks it in memory."""

    id: int
    image_id: int
    region_id: int | None
    kind: str
    key: str
    level: int
    box: Box
    grid_size: int | None
    votes_wanted: int
    gold_answer: Any = None
    active: list[int] | None = None
    answers: list[tuple[int, Any]] = field(default_factory=list)
    leases: dict[int, float] = field(default_factory=dict)
    expired: set[int] = field(default_factory=set)
    """Workers whose lease ran out: they may still answer if nobody has taken their place."""

    @property
    def order(self) -> tuple[int, int, int]:
        return (task_priority(self.kind), self.level, self.id)

    def has_seen(self, worker_id: int) -> bool:
        return worker_id in self.leases or any(w == worker_id for w, _ in self.answers)


@dataclass(frozen=True)
class Assignment:
    """A question leased to one worker. Gold questions are presented as ordinary patches."""

    task_id: int
    kind: str
    image_id: int
    box: Box
    grid_size: int | None
    question: str
    lease_expires_at: float
    variant: str | None = None
    """"outline" for an outline check (shown as a verification): how the answer is to be judged."""
    active_cells: tuple[int, ...] | None = None
    """A boundary round: the only grid cells shown clickable (the others are decided)."""


@dataclass(frozen=True)
class SubmitResult:
    answer_id: int
    duplicate: bool
    task_done: bool
    created_tasks: int
    worker_banned: bool


def validate_value(kind: str, value: Any, grid_size: int | None, active: list[int] | None = None) -> Any:
    if kind == "grid":
        cells = value.get("cells") if isinstance(value, dict) else None
        if not isinstance(cells, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in cells):
            raise AnswerRejected('a grid answer is {"cells": [int, ...]}')
        size = (grid_size or 0) ** 2
        if any(c < 0 or c >= size for c in cells):
            raise AnswerRejected(f"cell index outside the {grid_size} x {grid_size} grid")
        if active is not None and not set(cells) <= set(active):
            raise AnswerRejected("a cell that was not shown clickable in this round was clicked")
        return {"cells": sorted(set(cells))}
    if value not in (YES, NO):
        raise AnswerRejected(f'a {kind} answer is "yes" or "no", got {value!r}')
    return value


class MemoryPlanner:
    """Leases and answers for the in-process simulator; the project's planner decides what is asked."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        project_id: int,
        config: ProjectConfig,
        rng: np.random.Generator,
        persist_leases: bool = False,
    ):
        self.sessions = sessions
        self.project_id = project_id
        self.config = config
        self.rng = rng
        self.persist_leases = persist_leases
        self.scheme = planner_for(config)
        self.early_stop = self.scheme.uses_early_stop(config)
        self.open: dict[int, OpenQuestion] = {}
        self.queue: list[tuple[int, int, int]] = []
        self.gold: dict[int, OpenQuestion] = {}
        self.banned: set[int] = set()
        self.load()

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)build the in-memory view from the store."""
        self.open.clear()
        self.queue.clear()
        self.gold.clear()
        with self.sessions() as session:
            self.banned = set(
                session.scalars(select(WorkerRow.id).where(WorkerRow.project_id == self.project_id, WorkerRow.banned))
            )
            rows = session.scalars(
                select(TaskRow).where(TaskRow.project_id == self.project_id, TaskRow.state == "open").order_by(TaskRow.id)
            ).all()
            for row in rows:
                self._track(row)
            answers = session.execute(
                select(AnswerRow.task_id, AnswerRow.worker_id, AnswerRow.value)
                .join(TaskRow, TaskRow.id == AnswerRow.task_id)
                .where(TaskRow.project_id == self.project_id, TaskRow.state == "open")
                .order_by(AnswerRow.id)
            )
            for task_id, worker_id, value in answers:
                question = self.open.get(task_id) or self.gold.get(task_id)
                if question is not None:
                    question.answers.append((worker_id, value))
            if self.persist_leases:
                leases = session.execute(
                    select(LeaseRow.task_id, LeaseRow.worker_id, LeaseRow.expires_at).join(TaskRow).where(
                        TaskRow.project_id == self.project_id
                    )
                )
                for task_id, worker_id, expires_at in leases:
                    question = self.open.get(task_id) or self.gold.get(task_id)
                    if question is not None:
                        question.leases[worker_id] = expires_at

    def _track(self, row: TaskRow) -> None:
        question = OpenQuestion(
            id=row.id,
            image_id=row.image_id,
            region_id=row.region_id,
            kind=row.kind,
            key=row.key,
            level=row.level,
            box=Box.from_list(row.box),
            grid_size=row.grid_size,
            votes_wanted=row.votes_wanted,
            gold_answer=row.gold_answer,
            active=(row.spec or {}).get("active"),
        )
        if row.kind == "gold":
            self.gold[row.id] = question
            return
        self.open[row.id] = question
        bisect.insort(self.queue, question.order)

    def _untrack(self, question: OpenQuestion) -> None:
        del self.open[question.id]
        index = bisect.bisect_left(self.queue, question.order)
        del self.queue[index]

    # -- asking --------------------------------------------------------------------------------

    def has_work(self) -> bool:
        """Whether any question still wants answers (gold aside)."""
        return bool(self.open)

    def pending_answers(self) -> int:
        return sum(len(q.leases) for q in self.open.values())

    def _effective(self, question: OpenQuestion) -> list[Any]:
        return [value for worker, value in question.answers if worker not in self.banned]

    def _wants_more(self, question: OpenQuestion) -> bool:
        values = self._effective(question)
        target = votes_target(values, question.votes_wanted, self.early_stop)
        return len(values) + len(question.leases) < target

    def _expire(self, question: OpenQuestion, now: float) -> None:
        for worker, expires_at in list(question.leases.items()):
            if expires_at <= now:
                del question.leases[worker]
                question.expired.add(worker)

    def next_task(self, worker_id: int, now: float) -> Assignment | None:
        """Lease the next question to ``worker_id``, or None when it has nothing left to answer."""
        if worker_id in self.banned:
            return None
        if self.gold and self.open and self.rng.random() < self.config.crowd.gold_rate:
            fresh = [q for q in self.gold.values() if not q.has_seen(worker_id)]
            if fresh:
                return self._lease(fresh[int(self.rng.integers(len(fresh)))], worker_id, now)
        for order in self.queue:
            question = self.open[order[2]]
            if question.has_seen(worker_id):
                continue
            self._expire(question, now)
            if self._wants_more(question):
                return self._lease(question, worker_id, now)
        return None

    def _lease(self, question: OpenQuestion, worker_id: int, now: float) -> Assignment:
        expires_at = now + self.config.crowd.lease_seconds
        question.leases[worker_id] = expires_at
        if self.persist_leases:
            with self.sessions.begin() as session:
                session.add(LeaseRow(task_id=question.id, worker_id=worker_id, expires_at=expires_at))
        return Assignment(
            task_id=question.id,
            kind=shown_kind(question.kind),
            image_id=question.image_id,
            box=question.box,
            grid_size=question.grid_size,
            question=question_text(question.kind, self.config.target),
            lease_expires_at=expires_at,
            variant=task_variant(question.kind),
            active_cells=tuple(question.active) if question.active is not None else None,
        )

    # -- answering -----------------------------------------------------------------------------

    def submit(
        self,
        worker_id: int,
        task_id: int,
        value: Any,
        *,
        client_id: str,
        seconds: float,
        shown_at: float,
        answered_at: float,
        time_source: str,
        client_ms: int | None = None,
    ) -> SubmitResult:
        """Store one answer and everything it decides, in one transaction."""
        with self.sessions() as session:
            existing = session.scalar(select(AnswerRow).where(AnswerRow.client_id == client_id))
            if existing is not None:
                if existing.worker_id != worker_id or existing.task_id != task_id:
                    raise AnswerRejected(f"client id {client_id!r} was used for another answer")
                return SubmitResult(existing.id, True, False, 0, False)
        question = self.open.get(task_id) or self.gold.get(task_id)
        if question is None or not self._holds(question, worker_id):
            raise AnswerRejected(f"task {task_id} is not leased to worker {worker_id}")
        value = validate_value(question.kind, value, question.grid_size, question.active)

        with self.sessions.begin() as session:
            answer = AnswerRow(
                task_id=task_id,
                worker_id=worker_id,
                value=value,
                client_id=client_id,
                shown_at=shown_at,
                answered_at=answered_at,
                client_ms=client_ms,
                seconds=seconds,
                time_source=time_source,
            )
            session.add(answer)
            if self.persist_leases:
                lease = session.scalar(select(LeaseRow).where(LeaseRow.task_id == task_id, LeaseRow.worker_id == worker_id))
                if lease is not None:
                    session.delete(lease)
            worker = session.get(WorkerRow, worker_id)
            banned = self._update_worker(worker, question, value, seconds)
            done, created = False, []
            question.answers.append((worker_id, value))
            if question.kind != "gold":
                answers = [(w, v) for w, v in question.answers if w not in self.banned]
                outcome = self.scheme.after_answer(session, self.project_id, self.config, session.get(TaskRow, question.id), answers)
                done, created = outcome.done, outcome.created
                question.votes_wanted = outcome.votes_wanted
            try:
                session.flush()
            except IntegrityError as exc:
                question.answers.pop()
                raise AnswerRejected(f"worker {worker_id} already answered task {task_id}") from exc
            created_ids = [(row.id, row) for row in created]
        question.leases.pop(worker_id, None)
        question.expired.discard(worker_id)
        if done:
            self._untrack(question)
        for _, row in created_ids:
            self._track(row)
        if banned:
            self.banned.add(worker_id)
        return SubmitResult(answer.id, False, done, len(created), banned)

    def _holds(self, question: OpenQuestion, worker_id: int) -> bool:
        """Whether the worker may answer: it holds the lease, or its lease expired but nobody took its place.

        A late answer is honest work the requester pays for anyway; it is refused only when
        accepting it would give the question more answers than wanted.
        """
        if worker_id in question.leases:
            return True
        if worker_id not in question.expired or any(w == worker_id for w, _ in question.answers):
            return False
        return question.kind == "gold" or self._wants_more(question)

    def _update_worker(self, worker: WorkerRow, question: OpenQuestion, value: Any, seconds: float) -> bool:
        """Quality bookkeeping; returns True when this answer gets the worker banned."""
        return record_answer_quality(worker, question.kind, question.gold_answer, value, seconds, self.config.crowd)
