"""The simulator's dispatcher: open questions and leases in memory, answers and decisions in the store.

The in-process simulator asks one question after another on a simulated clock, with nobody else
writing: so the open questions, their answers and their leases live here, loaded from the store
when the dispatcher starts (a killed run resumes from the store). An answer is stored, and
everything it decides, in one transaction. The rules are :mod:`.rules`; the decisions the project's
policy (:mod:`crowdpatch.crowd.policies`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.dispatch.rules import (
    AnswerRejected,
    Assignment,
    Dispatcher,
    NewAnswer,
    StoredAnswer,
    answer_row,
    answer_seconds,
    assignment,
    check_replay,
    choice_count,
    late_answer_accepted,
    needs_image_size,
    not_leased,
    validate_answer,
)
from crowdpatch.crowd.kinds import GOLD, task_priority
from crowdpatch.crowd.policies import policy_for
from crowdpatch.crowd.quality import GivenAnswer, record_answer_quality
from crowdpatch.crowd.questions import QuestionFacts
from crowdpatch.crowd.votes import votes_target
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow


class SimulatedClock:
    """The simulator's clock: reads the time it was last set to."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class OpenQuestion:
    """A question still collecting answers, as the dispatcher tracks it in memory."""

    id: int
    project_id: int
    image_id: int
    region_id: int | None
    kind: str
    key: str
    level: int
    box: Box
    grid_size: int | None
    votes_wanted: int
    gold_answer: Any = None
    spec: dict[str, Any] | None = None
    answers: list[tuple[int, Any]] = field(default_factory=list)
    leases: dict[int, tuple[float, float]] = field(default_factory=dict)
    """Worker -> (leased at, expires at) of the live leases."""
    expired: dict[int, float] = field(default_factory=dict)
    """Worker -> leased at, of the leases that ran out: they may still answer if nobody has taken their place."""

    @property
    def order(self) -> tuple[int, int, int]:
        return (task_priority(self.kind), self.level, self.id)

    def has_seen(self, worker_id: int) -> bool:
        return worker_id in self.leases or any(w == worker_id for w, _ in self.answers)

    def facts(self) -> QuestionFacts:
        return QuestionFacts(
            self.id, self.kind, self.votes_wanted, (self.project_id, self.image_id, self.region_id), self.key
        )


class MemoryDispatcher(Dispatcher):
    """Leases and answers for the in-process simulator; the project's policy decides what is asked."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        project_id: int,
        config: ProjectConfig,
        rng: np.random.Generator,
        clock: Callable[[], float],
    ):
        self.sessions = sessions
        self.project_id = project_id
        self.config = config
        self.rng = rng
        self.clock = clock
        self.policy = policy_for(config)
        self.early_stop = self.policy.uses_early_stop(config)
        self.open: dict[int, OpenQuestion] = {}
        self.queue: list[tuple[int, int, int]] = []
        self.gold: dict[int, OpenQuestion] = {}
        self.banned: set[int] = set()
        self.last_id = 0
        """The newest question tracked: questions an answer creates are the ones after it."""
        self.image_sizes: dict[int, tuple[int, int]] = {}
        """image id -> (width, height), for the answers checked against their image."""
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
            self.last_id = session.scalar(select(TaskRow.id).order_by(TaskRow.id.desc()).limit(1)) or 0
            rows = session.scalars(
                select(TaskRow)
                .where(TaskRow.project_id == self.project_id, TaskRow.state == "open")
                .order_by(TaskRow.id)
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

    def _track(self, row: TaskRow) -> None:
        question = OpenQuestion(
            id=row.id,
            project_id=row.project_id,
            image_id=row.image_id,
            region_id=row.region_id,
            kind=row.kind,
            key=row.key,
            level=row.level,
            box=Box.from_list(row.box),
            grid_size=row.grid_size,
            votes_wanted=row.votes_wanted,
            gold_answer=row.gold_answer,
            spec=row.spec,
        )
        self.last_id = max(self.last_id, row.id)
        if row.kind == GOLD:
            self.gold[row.id] = question
            return
        self.open[row.id] = question
        bisect.insort(self.queue, question.order)

    def _track_new(self, session: Session) -> int:
        """Track the questions created since the newest one tracked (in this transaction); how many."""
        rows = session.scalars(
            select(TaskRow).where(TaskRow.project_id == self.project_id, TaskRow.id > self.last_id).order_by(TaskRow.id)
        ).all()
        for row in rows:
            self._track(row)
        return len(rows)

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
        for worker, (leased_at, expires_at) in list(question.leases.items()):
            if expires_at <= now:
                del question.leases[worker]
                question.expired[worker] = leased_at

    def next_task(self, worker_id: int) -> Assignment | None:
        """Lease the next question to ``worker_id``, or None when it has nothing left to answer."""
        if worker_id in self.banned:
            return None
        now = self.clock()
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
        expires_at = self.lease_expiry(now)
        question.leases[worker_id] = (now, expires_at)
        return assignment(
            question.kind,
            question.id,
            question.image_id,
            question.box,
            question.grid_size,
            question.spec,
            self.config.target,
            expires_at,
        )

    # -- answering -----------------------------------------------------------------------------

    def store(self, answer: NewAnswer) -> StoredAnswer:
        worker_id, task_id, client_id, seconds = answer.worker_id, answer.task_id, answer.client_id, answer.seconds
        now = self.clock()
        with self.sessions() as session:
            existing = session.execute(
                select(AnswerRow.id, AnswerRow.worker_id, AnswerRow.task_id).where(AnswerRow.client_id == client_id)
            ).first()
            if existing is not None:
                check_replay(client_id, existing.worker_id, existing.task_id, worker_id, task_id)
                state = session.scalar(select(TaskRow.state).where(TaskRow.id == task_id))
                return StoredAnswer(existing.id, task_id, True, state == "done", False)
        question = self.open.get(task_id) or self.gold.get(task_id)
        shown_at = self._holder(question, worker_id) if question is not None else None
        if question is None or shown_at is None:
            raise not_leased(task_id)
        value = self._validated(question, answer.value)
        if seconds is None:
            seconds = answer_seconds(answer.client_ms, shown_at, now)

        with self.sessions.begin() as session:
            row = AnswerRow(**answer_row(answer, value, shown_at, now, seconds))
            session.add(row)
            worker = session.get(WorkerRow, worker_id)
            worker.answers_given += 1
            given = GivenAnswer(question.kind, value, seconds, question.gold_answer)
            stopped = record_answer_quality(worker, given, self.config.crowd)
            done, created = False, 0
            question.answers.append((worker_id, value))
            try:
                if question.kind != GOLD:
                    counted = [(w, v) for w, v in question.answers if w not in self.banned]
                    outcome = self.policy.after_answer(session, self.config, question.facts(), counted)
                    done, created = outcome.done, outcome.created
                    if not done and outcome.votes_wanted != question.votes_wanted:
                        session.get(TaskRow, question.id).votes_wanted = outcome.votes_wanted
                    question.votes_wanted = outcome.votes_wanted
                session.flush()
            except IntegrityError as exc:
                question.answers.pop()
                raise AnswerRejected(f"worker {worker_id} already answered task {task_id}") from exc
            if created:
                created = self._track_new(session)
        question.leases.pop(worker_id, None)
        question.expired.pop(worker_id, None)
        if done:
            self._untrack(question)
        if stopped:
            self.banned.add(worker_id)
        return StoredAnswer(row.id, task_id, False, done, stopped, created)

    def _validated(self, question: OpenQuestion, value: Any) -> Any:
        """The answer in its stored form, checked as the server's dispatcher checks it (the same limits)."""
        return validate_answer(
            question.kind,
            value,
            question.grid_size,
            (question.spec or {}).get("active"),
            image_size=self._image_size(question.image_id) if needs_image_size(question.kind) else None,
            choices=choice_count(question.kind, question.spec),
        )

    def _image_size(self, image_id: int) -> tuple[int, int]:
        """An image's (width, height), read from the store once per image (an image never changes once added)."""
        size = self.image_sizes.get(image_id)
        if size is None:
            with self.sessions() as session:
                image = session.get(ImageRow, image_id)
                size = self.image_sizes[image_id] = (image.width, image.height)
        return size

    def _holder(self, question: OpenQuestion, worker_id: int) -> float | None:
        """When the worker was handed the question, if it may answer it: it holds the lease, or its lease
        expired but nobody took its place (:func:`~.rules.late_answer_accepted`); else None."""
        if worker_id in question.leases:
            return question.leases[worker_id][0]
        if worker_id not in question.expired or any(w == worker_id for w, _ in question.answers):
            return None
        accepted = late_answer_accepted(
            question.kind,
            not self._wants_more(question),
            lambda: self._effective(question),
            question.votes_wanted,
            self.early_stop,
        )
        return question.expired[worker_id] if accepted else None
