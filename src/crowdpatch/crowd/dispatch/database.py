"""The server's dispatcher: leases and answers in the database, safe across threads and processes.

Any number of server processes share one store. Handing out a question is one transaction that
picks the highest-priority open question this worker has not seen whose answers plus leases are
below what it wants, locks it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent workers
spread over questions instead of queueing on one; SQLite has a single writer: the server's threads
and processes take turns by ``store.writer_lock`` and ``BEGIN IMMEDIATE``), re-checks it under the
lock and leases it. Storing an answer locks the question the same way, so a question never gets
more answers than wanted (gold aside), and whatever the answer decides (the project's policy:
:mod:`crowdpatch.crowd.policies`) is written in the same transaction. The rules are :mod:`.rules`.

Counting is done by counters on the task row (``answers_count``, ``leases_count``,
``answers_disagree``), changed in the same transaction as the rows they count, so the next
question is the first row of the ``ix_task_queue`` index that passes a few column tests: the
request path costs a handful of indexed statements whatever the number of open questions. Those
statements are :mod:`.statements`. On PostgreSQL, where each statement is a round trip to another
process or machine, an answer with its next question is two of them in one transaction: a call
that locks and reads (a function of migration 0008), then one write that also leases the next
question without ever waiting for a lock (:meth:`DatabaseDispatcher._submit_and_next_postgres`).
A server runs the answers it receives together in one transaction on either backend
(:meth:`DatabaseDispatcher.run_grouped`): one commit, and on PostgreSQL one read, for all of them.

A lease holds its slot until it is answered, its question closes, or it has expired *and* its slot
is handed to another worker (the expired row is then deleted). So a late answer is accepted
exactly when nobody took its place, and expired leases do not pile up: those of closed questions
are deleted when the question closes, and a periodic sweep removes any left by other writers.
"""

from __future__ import annotations

import functools
import inspect
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Literal, TypeVar

from sqlalchemy import bindparam, column, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.dispatch import statements as sql
from crowdpatch.crowd.dispatch.rules import (
    MAX_HELD,
    REFUSALS,
    Assignment,
    Dispatcher,
    NewAnswer,
    NotLeased,
    SessionComplete,
    StoredAnswer,
    TooManyHeld,
    WorkerStopped,
    answer_row,
    answer_seconds,
    assignment,
    check_replay,
    check_session_open,
    choice_count,
    late_answer_accepted,
    late_refusal,
    needs_image_size,
    not_leased,
    quota_leaves_room,
    validate_answer,
)
from crowdpatch.crowd.kinds import GOLD
from crowdpatch.crowd.policies import policy_for
from crowdpatch.crowd.quality import GivenAnswer, WorkerCounters, record_answer_quality, undo_answer_quality
from crowdpatch.crowd.questions import QuestionFacts
from crowdpatch.crowd.votes import first_two_disagree
from crowdpatch.store.connection_session import connection_transaction
from crowdpatch.store.db import backend_of
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow, WorkerRow
from crowdpatch.store.sql import Statement
from crowdpatch.store.writer_lock import WriterLock

Mode = Literal["patch", "polygon"]
T = TypeVar("T")


def _outcome(call: Callable[[], T]) -> T | Exception:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it
        return exc


IDS_PER_STATEMENT = 10_000
"""Question ids bound into one statement by :meth:`DatabaseDispatcher.sync_counters` (databases cap parameters)."""

HAND_OUT_ATTEMPTS = 5
"""Tries of one hand-out that PostgreSQL aborts as a deadlock. A hand-out that waits for a question holds no
other (:meth:`DatabaseDispatcher._let_go`), so hand-outs do not deadlock one another; this guards against
whatever else locks questions in another order (a ban's recount locks the worker's questions in id order
inside an answer's transaction). Each retry waits a random few milliseconds first
(:meth:`DatabaseDispatcher._after_deadlock`), so the same transactions do not meet again in the same order."""

DEADLOCK_SQLSTATE = "40P01"


def is_deadlock(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's "deadlock detected", raised by the driver or wrapped by SQLAlchemy."""
    for error in (exc, getattr(exc, "orig", None)):
        if getattr(error, "sqlstate", None) == DEADLOCK_SQLSTATE:
            return True
    return False


class _WouldWait(Exception):
    """Leasing the next question would have to wait for a lock, or look again (PostgreSQL, internal)."""


@dataclass(frozen=True)
class _NextFacts:
    """What leasing a worker's next question reads, read by the statement that stored its answer (PostgreSQL)."""

    held: list[Any]
    """The worker's live unanswered leases, with their questions (rows of ``statements.HELD``)."""
    expired: bool
    """Whether any lease had expired (the hand-out then looks at expired slots first)."""
    tried: bool = False
    """Whether the statement that stored the answer also tried to lease the next question (``store_and_lease``)."""
    leased: Any = None
    """The question it leased (``TASK_COLUMNS``), or None: nothing free, or the pick was not tried."""

    @classmethod
    def read(cls, row: Any) -> _NextFacts:
        """From a row with ``held`` (JSON) and ``expired`` columns, and those of ``store_and_lease`` when it has
        them (an answer's write leaves the lease it deleted out of ``held``)."""
        held = [SimpleNamespace(**lease) for lease in row.held]
        tried = getattr(row, "tried", False)
        leased = None
        if tried and row.leased:
            leased = SimpleNamespace(**{name: getattr(row, f"next_{name}") for name in sql.TASK_COLUMNS})
        return cls(held, row.expired, tried, leased)


def _counters_of(worker_id: int, row: dict[str, Any]) -> tuple[WorkerCounters, int, bool]:
    """The worker's quality counters, answers given and whether its session is finished, from a row of them."""
    counters = WorkerCounters(
        worker_id,
        row["attributes"],
        row["gold_seen"],
        row["gold_correct"],
        row["too_fast"],
        row["quality"],
        bool(row["banned"]),
        row["stopped_reason"],
    )
    return counters, row["given"], bool(row["finished"])


@dataclass(frozen=True)
class _AfterGroup:
    """What is left of a grouped answer once its group has committed (PostgreSQL): leasing the next question
    where that may wait for a lock, which a transaction holding a group's locks must not do."""

    finish: Callable[[], Any]


@dataclass(frozen=True)
class _GroupedAnswer:
    """An answer to store, with what leasing its worker's next question needs (``submit_and_next``'s arguments)."""

    answer: NewAnswer
    max_answers: int | None
    mode: Mode = "patch"
    exclude: tuple[int, ...] = ()


def _firsts_and_later(
    members: list[tuple[int, _GroupedAnswer]],
) -> tuple[list[tuple[int, _GroupedAnswer]], dict[int, list[int]]]:
    """A group's answers split: the first to each question, and by question the later ones (their call indexes).

    An answer by a worker, or with a client id, already seen in the group is in neither: it runs alone.
    """
    workers_and_clients: set[tuple[str, Any]] = set()
    firsts: list[tuple[int, _GroupedAnswer]] = []
    later: dict[int, list[int]] = {}
    for i, entry in members:
        answer = entry.answer
        keys = {("worker", answer.worker_id), ("client", answer.client_id)}
        if keys & workers_and_clients:
            continue
        workers_and_clients |= keys
        if answer.task_id in later:
            later[answer.task_id].append(i)
        else:
            later[answer.task_id] = []
            firsts.append((i, entry))
    return firsts, later


class _GroupReadStale(Exception):
    """An answer of a group got its worker stopped: what the group read beforehand counted its answers (internal)."""


@dataclass(frozen=True)
class _Written:
    """An answer checked and written, before what it decides (:meth:`DatabaseDispatcher._decide`)."""

    answer_id: int
    task_id: int
    question: Any
    """The question's row as the answer read it (kind, image, region, votes wanted, key...)."""
    counted: list[tuple[int, Any]]
    """(worker, value) of the answers that count toward the question, this one included unless its worker stopped."""
    worker_id: int
    stopped: bool
    """Whether the worker is stopped (by this answer, or before)."""
    stops_worker: bool
    """Whether this answer got its worker stopped."""
    given: int
    facts: _NextFacts | None = None

    @property
    def provisional(self) -> StoredAnswer:
        """The stored answer, before its decision is known (what leasing the worker's next question reads)."""
        return StoredAnswer(self.answer_id, self.task_id, False, False, self.stopped, 0, self.given)


@dataclass(frozen=True)
class NextTask:
    """The question leased along with an answer (:meth:`DatabaseDispatcher.submit_and_next`), or why there is none."""

    assignment: Assignment | None
    reason: Literal["none", "session_complete", "stopped", "too_many_held"] | None = None
    """Why ``assignment`` is None: "none" when nothing is left for this worker."""

    def __post_init__(self) -> None:
        if self.assignment is None and self.reason is None:
            object.__setattr__(self, "reason", "none")


class DatabaseDispatcher(Dispatcher):
    """Leases and answers for one project, safe across threads and processes."""

    MAX_HELD = MAX_HELD

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
        self.server_number = random.SystemRandom().randrange(1, 2**31)
        """Names this dispatcher's leases (``lease.server``): the usual hand-out passes over images whose questions
        another process's workers hold (``statements.hand_out``). Drawn, not assigned: processes on several
        machines share nothing but the database."""
        self._submit_and_next_signature = inspect.signature(self.submit_and_next)
        """Binds a queued ``submit_and_next`` call's arguments by name (:meth:`_grouped_call`), read once."""
        backend = backend_of(sessions)
        self.postgres = backend == "postgresql"
        self._sqlite_writer = WriterLock(None if self.postgres else sessions.kw["bind"].url.database)
        self._group = threading.local()
        """``session``: the transaction of :meth:`run_grouped` on the thread running it; on PostgreSQL also
        ``contexts``, what its first answers read under their questions' locks (read for all in one statement),
        and ``busy``, its questions (:meth:`_busy`)."""
        self._next_sweep = 0.0
        self._image_sizes: dict[int, tuple[int, int]] = {}
        """image id -> (width, height), for the answers checked against their image (:meth:`_image_size`)."""
        self.policy = policy_for(config)
        self.early_stop = self.policy.uses_early_stop(config)
        self.hand_out = {mode: sql.hand_out(mode, self.early_stop, backend) for mode in sql.MODE_KINDS}
        self.sync_counters()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        group = getattr(self._group, "session", None)
        if group is not None:  # inside run_grouped, on its thread: the group's transaction
            yield group
            return
        if self.postgres:
            # Most answers run statements alone: the ORM session is made only when asked for.
            with connection_transaction(self.sessions) as transaction:
                yield transaction  # type: ignore[misc]  # stands in for a Session (see connection_session)
            return
        with self._sqlite_writer, self.sessions.begin() as session:
            sql.BEGIN_IMMEDIATE.run(session)
            yield session

    def run_grouped(self, calls: list[Callable[[], T]]) -> list[T | Exception]:
        """Run dispatcher calls (``submit``, ``next_task``...) in one transaction: one commit for all.

        Group commit: a commit costs as much as the rest of an answer together (SQLite writes the WAL
        frames of every page the transaction touched; PostgreSQL flushes its WAL, and each transaction
        is two more round trips), so the server stores the answers that arrive together in one
        transaction. On SQLite each call runs in a savepoint: one that fails with a refusal (409,
        422, nothing left...) is rolled back alone and gets its exception; the others are kept. Any
        other failure (a database error, the commit itself) abandons the whole group, nothing of it
        stored, and each call is then run again in a transaction of its own: one bad request cannot
        take its neighbours' answers down with it, and nothing is acknowledged before the commit that
        holds it. Returns each call's result or exception, in order. PostgreSQL groups answers with
        their next question only, in phases (:meth:`_run_group_postgres`).
        """
        if len(calls) == 1:
            return [_outcome(call) for call in calls]
        if self.postgres:
            return self._run_group_postgres(calls)
        try:
            with self._sqlite_writer, self.sessions.begin() as session:
                sql.BEGIN_IMMEDIATE.run(session)
                self._group.session = session
                try:
                    results = [self._in_savepoint(session, call) for call in calls]
                finally:
                    self._group.session = None
        except Exception:  # noqa: BLE001 - each call is retried alone, and reports its own error
            return [_outcome(call) for call in calls]
        return results

    def joins_groups(self, call: Callable[..., Any]) -> bool:
        """Whether ``call`` (a method of this dispatcher) joins a group on PostgreSQL: an answer with its next
        question does. An answer alone does not: with separate next-question requests, which may wait for a
        group's locks, grouping them served no more answers at a higher p99 (docs/benchmarks.md)."""
        return call == self.submit_and_next

    def _grouped_call(self, call: Callable[[], Any]) -> _GroupedAnswer | None:
        """The answer a call stores and how its next question is asked, when it is ``submit_and_next`` bound to
        its arguments."""
        if not isinstance(call, functools.partial) or not self.joins_groups(call.func):
            return None
        arguments = self._submit_and_next_signature.bind(*call.args, **call.keywords).arguments
        return _GroupedAnswer(
            arguments["answer"],
            arguments.get("max_answers"),
            arguments.get("mode", "patch"),
            tuple(arguments.get("exclude", ())),
        )

    def _run_group_postgres(self, calls: list[Callable[[], T]]) -> list[T | Exception]:
        """PostgreSQL group commit: answers to questions no other transaction holds, in one transaction.

        Its first statement locks the group's questions in id order, skipping any that another
        transaction holds (``LOCK_GROUP_POSTGRES``): a group never waits for a question, so two groups
        cannot wait for each other's. The next reads under those locks what the first answer to each
        question needs (``ANSWERING_GROUP_POSTGRES``). Then, in phases:

        1. the first answer to each question is checked and written, with its worker's next question
           where one is free (``store_and_lease``, which passes over the group's own questions: one of
           them may close below);
        2. the next questions that could not be leased that way, where that needs no wait;
        3. question after question, in the order of their images: what the first answer decides
           (:meth:`_decide`), then each later answer to the question, whole, as it would run alone. A
           decision locks its image, so every group takes image locks in one order, and holds them for
           this last phase only (images are where concurrent groups meet).

        An answer of the group reads nothing another writes, but for the later answers to a question,
        which run after the answers before them have decided. A refusal (409, 422...) comes before its
        answer's first write: that answer gets it, the others go on. Any other failure, or an answer that
        gets its worker stopped (its other answers stop counting, which the group read beforehand),
        rolls the group back whole, and every call runs alone. What the group does not hold (an answer to
        a question another transaction held, a worker's or client id's second answer, any other call)
        runs alone after the commit, and so does leasing a next question that has to wait for a lock.
        Nothing is acknowledged before the commit that holds it.
        """
        grouped = [self._grouped_call(call) for call in calls]
        tasks = sorted({entry.answer.task_id for entry in grouped if entry is not None})
        try:
            with connection_transaction(self.sessions) as session:
                images = {row.id: row.image_id for row in sql.LOCK_GROUP_POSTGRES.all(session, tasks=tasks)}
                firsts, later = _firsts_and_later(
                    [(i, entry) for i, entry in enumerate(grouped) if entry and entry.answer.task_id in images]
                )
                self._group.contexts = self._read_contexts(session, [entry for _, entry in firsts])
                self._group.session = session
                self._group.busy = sorted(images)
                try:
                    results = self._answer_group(session, calls, images, firsts, later)
                finally:
                    self._group.session = self._group.contexts = self._group.busy = None
        except Exception:  # noqa: BLE001 - each call is run again alone, and reports its own outcome
            return [_outcome(call) for call in calls]
        outcomes = [results[i] if i in results else _outcome(call) for i, call in enumerate(calls)]
        return [_outcome(outcome.finish) if isinstance(outcome, _AfterGroup) else outcome for outcome in outcomes]

    def _answer_group(
        self,
        session: Session,
        calls: list[Callable[[], Any]],
        images: dict[int, int],
        firsts: list[tuple[int, _GroupedAnswer]],
        later: dict[int, list[int]],
    ) -> dict[int, Any]:
        """The phases of :meth:`_run_group_postgres`; each answer's result (or refusal) by its call's index.

        ``images``: the image of each question; ``firsts``: the first answer to each question; ``later``: by
        question, the calls of the others.
        """
        results: dict[int, Any] = {}
        written: dict[int, _Written] = {}
        replays: dict[int, StoredAnswer] = {}
        steps: dict[int, tuple[float, bool, bool]] = {}
        for i, entry in firsts:
            now = self.clock()
            gold = self._draws_gold(entry.mode)
            piggyback = now < self._next_sweep
            lease_now = entry.mode if piggyback and not gold else None
            steps[i] = (now, gold, piggyback)
            try:
                outcome = self._write_answer(session, entry.answer, now, entry.max_answers, lease_now)
            except REFUSALS as exc:
                results[i] = exc
                continue
            if isinstance(outcome, StoredAnswer):
                replays[i] = outcome
            elif outcome.stops_worker:
                raise _GroupReadStale()
            else:
                written[i] = outcome
        following: dict[int, NextTask | None] = {}
        for i, entry in firsts:
            if i in written:
                now, gold, piggyback = steps[i]
                stored, facts = written[i].provisional, written[i].facts
                following[i] = self._following(session, entry, stored, facts, now, gold, piggyback)
        for i, entry in sorted(firsts, key=lambda first: (images[first[1].answer.task_id], first[0])):
            if i not in results:
                stored = replays[i] if i in replays else self._decide(session, written[i])
                if following.get(i) is not None:
                    results[i] = (stored, following[i])
                else:
                    results[i] = _AfterGroup(functools.partial(self._lease_alone, entry, stored, *steps[i][:2]))
            for j in later[entry.answer.task_id]:
                results[j] = _outcome(calls[j])  # REFUSALS only: any other exception ends the group
                if isinstance(results[j], Exception) and not isinstance(results[j], REFUSALS):
                    raise results[j]
            if session.orm is not None:  # each question starts from the database, as alone
                session.orm.flush()
                session.orm.expunge_all()
        return results

    def _read_contexts(self, session: Session, entries: list[_GroupedAnswer]) -> dict[tuple, Any]:
        """What ``crowdpatch_answering`` reads for each answer of a group, in one statement, keyed by (question,
        worker, client id)."""
        if not entries:
            return {}
        rows = sql.ANSWERING_GROUP_POSTGRES.all(
            session,
            tasks=[entry.answer.task_id for entry in entries],
            workers=[entry.answer.worker_id for entry in entries],
            clients=[entry.answer.client_id for entry in entries],
            lock_workers=[entry.max_answers is not None for entry in entries],
        )
        return {(row.task, row.worker, row.client): row.context for row in rows}

    def _group_context(self, task_id: int, worker_id: int, client_id: str) -> Any:
        """The answer's context read beforehand by its group (:meth:`_read_contexts`), or None."""
        contexts = getattr(self._group, "contexts", None)
        return contexts.pop((task_id, worker_id, client_id), None) if contexts else None

    def _grouped(self) -> bool:
        """Whether this thread runs a call of a group (:meth:`run_grouped`)."""
        return getattr(self._group, "session", None) is not None

    def _busy(self) -> list[int]:
        """The questions this thread's group answers (PostgreSQL): a next question is none of them."""
        return getattr(self._group, "busy", None) or []

    def _in_savepoint(self, session: Session, call: Callable[[], T]) -> T | Exception:
        sql.SAVEPOINT.run(session)
        try:
            result: T | Exception = call()
            if session.new or session.dirty or session.deleted:
                session.flush()
        except REFUSALS as exc:
            sql.ROLLBACK_TO_SAVEPOINT.run(session)
            result = exc
        sql.RELEASE_SAVEPOINT.run(session)
        # The next call starts from the database, as it would in a transaction of its own (and
        # nothing the rolled-back call loaded or added lingers).
        session.expunge_all()
        return result

    # -- counting ------------------------------------------------------------------------------

    def _counted(self, session: Session, task_id: int) -> list[tuple[int, Any]]:
        """(worker, value) of the answers that count toward a question (a stopped worker's do not), oldest first."""
        return [(row.worker_id, row.value) for row in sql.COUNTED.all(session, task=task_id)]

    def _counted_values(self, session: Session, task_id: int) -> list[Any]:
        return [value for _, value in self._counted(session, task_id)]

    def sync_counters(self, task_ids: Iterable[int] | None = None) -> int:
        """Recompute the task rows' counters from the answer and lease rows; returns how many were wrong.

        Run when the dispatcher starts (answers may have been stored by another writer, such as the
        in-process simulator, which keeps no counters) and after a ban (a stopped worker's answers
        stop counting). Rows found wrong are locked and recomputed under the lock, so a server
        process may run this while others serve.
        """
        with self._write() as session:
            return self._sync(session, None if task_ids is None else list(task_ids))

    def _sync(self, session: Session, task_ids: list[int] | None) -> int:
        if task_ids is not None and not task_ids:
            return 0
        wrong = self._wrong_counters(session, task_ids, lock=False)
        if self.postgres and wrong:
            wrong = self._wrong_counters(session, [row[0] for row in wrong], lock=True)
        if wrong:  # one executemany (pipelined by psycopg): a simulated study has every open question to fix
            rows = [
                dict(task=task, answers=answers, leases=leases, disagree=disagree)
                for task, answers, leases, disagree in wrong
            ]
            session.execute(sql.SET_COUNTERS.clause, rows)
        return len(wrong)

    def _wrong_counters(
        self, session: Session, task_ids: list[int] | None, lock: bool
    ) -> list[tuple[int, int, int, bool]]:
        """Open questions whose counters differ from their rows, with the right values.

        Named questions are read :data:`IDS_PER_STATEMENT` at a time: a study served after an
        in-process simulation (which keeps no counters) may have hundreds of thousands to fix, and a
        statement takes at most 65,535 parameters on PostgreSQL (32,766 on SQLite).
        """
        if task_ids is not None and len(task_ids) > IDS_PER_STATEMENT:
            return [
                row
                for start in range(0, len(task_ids), IDS_PER_STATEMENT)
                for row in self._wrong_counters(session, task_ids[start : start + IDS_PER_STATEMENT], lock)
            ]
        counted = "FROM answer a JOIN worker w ON w.id = a.worker_id WHERE a.task_id = t.id AND NOT w.banned"
        query = (
            "SELECT t.id, t.answers_count, t.leases_count, t.answers_disagree,"
            f" (SELECT count(*) {counted}),"
            " (SELECT count(*) FROM lease l WHERE l.task_id = t.id),"
            # The first two counted values: whether they disagree, with no statement per question.
            f" (SELECT a.value {counted} ORDER BY a.id LIMIT 1),"
            f" (SELECT a.value {counted} ORDER BY a.id LIMIT 1 OFFSET 1)"
            f" FROM task t WHERE t.project_id = :project AND t.state = 'open' AND t.kind IN {sql.COUNTED_KINDS_SQL}"
        )
        params: dict[str, Any] = {"project": self.project_id}
        if task_ids is not None:
            query += " AND t.id IN :ids"
            params["ids"] = task_ids
        if lock:
            query += " ORDER BY t.id FOR UPDATE OF t"
        value = AnswerRow.__table__.c.value.type
        statement = text(query).columns(
            column("id"), column("answers"), column("leases"), column("disagree"), column("true_answers"),
            column("true_leases"), column("first", value), column("second", value),
        )  # fmt: skip
        if task_ids is not None:
            statement = statement.bindparams(bindparam("ids", expanding=True))
        wrong = []
        for row in session.execute(statement, params).all():
            true_disagree = first_two_disagree([row.first, row.second] if row.true_answers >= 2 else [])
            if (row.answers, row.leases, bool(row.disagree)) != (row.true_answers, row.true_leases, true_disagree):
                wrong.append((row.id, row.true_answers, row.true_leases, true_disagree))
        return wrong

    # -- asking --------------------------------------------------------------------------------

    def next_task(
        self, worker_id: int, mode: Mode = "patch", exclude: tuple[int, ...] = (), max_answers: int | None = None
    ) -> Assignment | None:
        """Lease a question to the worker (or re-issue one it holds); None when it has nothing left.

        ``exclude`` names held questions the client already shows (so a prefetch gets another);
        ``max_answers`` ends the session (:class:`SessionComplete`) once the worker has given that many.
        """
        now = self.clock()
        for attempt in range(1, HAND_OUT_ATTEMPTS + 1):
            try:
                with self._write() as session:
                    return self._next(session, worker_id, mode, exclude, max_answers, now)
            except Exception as exc:
                # PostgreSQL ends one of two hand-outs that lock each other's questions (a deadlock); its
                # transaction is rolled back whole, so asking again is safe. Inside a group it is the group's call.
                if not self.postgres or self._grouped() or not is_deadlock(exc) or attempt == HAND_OUT_ATTEMPTS:
                    raise
                self._after_deadlock(attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _next(
        self,
        session: Session,
        worker_id: int,
        mode: Mode,
        exclude: tuple[int, ...],
        max_answers: int | None,
        now: float,
        known: StoredAnswer | None = None,
        facts: _NextFacts | None = None,
        may_wait: bool = True,
        gold: bool | None = None,
    ) -> Assignment | None:
        """:meth:`next_task` inside the caller's transaction; ``known``: the worker's answer just stored in it
        (which says whether the worker is stopped and how many answers it has given: one statement less);
        ``facts``: the worker's held leases and whether any lease expired, when read already (PostgreSQL:
        by the answer's statement, else here in one statement); ``may_wait``: False in an answer's
        transaction on PostgreSQL, where whatever would wait for a lock raises :class:`_WouldWait`;
        ``gold``: whether this hand-out is a gold question's turn, when drawn already (:meth:`_draws_gold`)."""
        if known is not None:
            stopped, reason, finished, given = known.worker_stopped, "stopped", False, known.answers_given or 0
        else:
            if self.postgres:
                row = sql.NEXT_FACTS_POSTGRES.one(session, worker=worker_id, now=now)
            else:
                row = sql.WORKER.one(session, worker=worker_id)
            if row is None:
                raise WorkerStopped("unknown worker")
            stopped, reason, finished, given = row.banned, row.stopped_reason, row.finished, row.given
            if self.postgres:
                facts = _NextFacts.read(row)
        check_session_open(finished, given, max_answers)
        if stopped:
            raise WorkerStopped(reason)
        if now >= self._next_sweep:
            self._sweep(session, now)
        expires_at = self.lease_expiry(now)
        held = facts.held if facts is not None else sql.HELD.all(session, worker=worker_id, now=now)
        for lease in held:
            if lease.id not in exclude and (lease.state == "open" or lease.kind == GOLD):
                if sql.EXTEND.run(session, lease=lease.lease_id, expires=expires_at).rowcount == 1:
                    return self._assignment(lease, expires_at)
                # Answered or handed on since it was read (PostgreSQL): in an answer's transaction, read
                # everything again in one of its own; else look at the next one.
                if not may_wait:
                    raise _WouldWait()
        if len(held) >= self.MAX_HELD:
            raise TooManyHeld(f"you hold {len(held)} unanswered questions; answer them first")
        if not quota_leaves_room(given, len(held), max_answers):
            return None
        if self._draws_gold(mode) if gold is None else gold:
            task = self._pick_gold(session, worker_id)
            if task is not None:
                return self._lease(session, task, worker_id, now, expires_at)
        expired = facts.expired if facts is not None else sql.ANY_EXPIRED.scalar(session, now=now)
        if not may_wait:
            if expired:
                raise _WouldWait()
            return self._lease_free(session, worker_id, mode, now, expires_at)
        return self._lease_open(session, worker_id, mode, now, expires_at, expired)

    def _draws_gold(self, mode: Mode) -> bool:
        """Whether a hand-out is a gold question's turn: drawn once per hand-out, at the project's gold rate."""
        rate = self.config.crowd.gold_rate
        return mode == "patch" and rate > 0 and self.rng.random() < rate

    def _lease(self, session: Session, task: Any, worker_id: int, now: float, expires_at: float) -> Assignment:
        self._insert_lease(session, task, worker_id, now, expires_at)
        sql.LEASED.run(session, task=task.id)
        return self._assignment(task, expires_at)

    def _insert_lease(self, session: Session, task: Any, worker_id: int, now: float, expires_at: float) -> None:
        """A lease row of ``task`` (its ``id`` and ``image_id``) for the worker, named as this dispatcher's."""
        sql.LEASE.run(
            session, task=task.id, worker=worker_id, expires=expires_at, now=now, server=self.server_number,
            image=task.image_id,
        )  # fmt: skip

    def _sweep(self, session: Session, now: float) -> None:
        """Delete leases that expired a lease period ago on closed (or gold) questions: nobody answers them now."""
        grace = self.config.crowd.lease_seconds
        sql.SWEEP.run(session, before=now - grace, project=self.project_id)
        self._next_sweep = now + grace / 4

    def _pick_gold(self, session: Session, worker_id: int) -> Any:
        if sql.HAS_OPEN.one(session, project=self.project_id) is None:
            return None
        ids = sql.GOLD_IDS.one(session, project=self.project_id)
        if ids is None or ids.first is None:
            return None
        start = self.rng.randint(ids.first, ids.last)
        return sql.GOLD_PICK.one(session, project=self.project_id, worker=worker_id, start=start) or (
            sql.GOLD_PICK.one(session, project=self.project_id, worker=worker_id, start=ids.first)
            if start > ids.first
            else None
        )

    def _lease_open(
        self, session: Session, worker_id: int, mode: Mode, now: float, expires_at: float, expired: bool
    ) -> Assignment | None:
        """Lease the first question in priority order with a slot for this worker; expired slots first.

        An expired lease whose question still wants its answer is overdue work, so it is handed on
        before fresh slots; its row is deleted, which is what refuses its holder's late answer.
        Nearly always no lease has expired (``expired``: one probe of ix_lease_expires_at), and then
        on PostgreSQL one statement picks and leases (``lease_first``, see :func:`.statements.hand_out`),
        on an image no other server process's workers hold; when it finds none, the picks below take any.
        """
        queries = self.hand_out[mode]
        picks = queries.pick
        if self.postgres and not expired:
            try:
                return self._lease_free(session, worker_id, mode, now, expires_at)
            except _WouldWait:
                pass
        params = {"project": self.project_id, "worker": worker_id, "now": now}
        if self.postgres:
            sql.PICK_SAVEPOINT.run(session)  # every pick below starts here again: see _let_go
        for variants in (queries.reclaim, picks) if expired else (picks,):
            skipped: list[int] = [-1]
            # SKIP LOCKED spreads concurrent workers over questions; when everything wanted is locked
            # by someone else at this instant, a plain lock waits instead of wrongly answering "none".
            for statement in variants:
                while True:
                    row = statement.one(session, skipped=skipped, **params)
                    if row is None:
                        break
                    lease_id = getattr(row, "lease_id", None)
                    if self.postgres and not self._still_free(
                        session, queries.recheck, row.id, worker_id, lease_id is not None
                    ):
                        self._let_go(session, skipped, row.id)
                        continue
                    if lease_id is not None:
                        # Another process may have handed on the same expired lease while this one waited
                        # for the question's lock (the lock re-checks the task row, not the lease row).
                        # (SQLite's single writer cannot race: there the row is always still there.)
                        deleted = sql.DROP_LEASE.run(session, lease=lease_id).rowcount
                        if self.postgres and deleted != 1:
                            self._let_go(session, skipped, row.id)
                            continue
                        sql.LEASED.run(session, task=row.id)
                    return self._lease(session, row, worker_id, now, expires_at)
        return None

    @staticmethod
    def _let_go(session: Session, skipped: list[int], task_id: int) -> None:
        """PostgreSQL: pass over a question a pick locked, and release its lock.

        The picks run after one savepoint, and until one is kept nothing else is written after it: rolling
        back to it releases the question's row lock and undoes nothing else, and the savepoint stays for the
        next pick. A hand-out that kept the locks of the questions it passed over while the waiting pick waited
        for another's deadlocked with hand-outs doing the same the other way round: a crowd asking at once for
        the slots of expired leases met that several times in a row.
        """
        sql.ROLLBACK_TO_PICK.run(session)
        skipped.append(task_id)

    def _lease_free(self, session: Session, worker_id: int, mode: Mode, now: float, expires_at: float) -> Assignment:
        """PostgreSQL: lease the first free question no other transaction holds, in one statement that never waits,
        on an image no other server process's workers hold.

        :class:`_WouldWait` when there is none (the picks that follow take any image), or the one picked was
        leased to this worker meanwhile.
        """
        statement = self.hand_out[mode].lease_first
        assert statement is not None
        first = statement.one(
            session, project=self.project_id, worker=worker_id, now=now, expires=expires_at, busy=self._busy(),
            server=self.server_number,
        )  # fmt: skip
        if first is None:
            raise _WouldWait()
        if not first.leased:  # leased to this worker by a request of its own since the pick's snapshot
            raise _WouldWait()
        return self._assignment(first, expires_at)

    def _still_free(
        self, session: Session, recheck: Statement | None, task_id: int, worker_id: int, reclaiming: bool
    ) -> bool:
        """Re-check under the lock: this statement sees whatever committed while the pick was running."""
        assert recheck is not None
        row = recheck.one(session, task=task_id, worker=worker_id)
        return row.state == "open" and not row.seen and (reclaiming or bool(row.free))

    def _assignment(self, task: Any, expires_at: float) -> Assignment:
        return assignment(
            task.kind, task.id, task.image_id, task.box, task.grid_size, task.spec, self.config.target, expires_at,
            (task.image_width, task.image_height),
        )  # fmt: skip

    # -- answering -----------------------------------------------------------------------------

    def store(self, answer: NewAnswer, max_answers: int | None = None) -> StoredAnswer:
        """:meth:`submit`; ``max_answers``: the answers the worker's session gives (:class:`SessionComplete` past them).

        A completed session takes no answer either (:func:`~.rules.check_session_open`).
        """
        now = self.clock()
        with self._write() as session:
            return self._store(session, answer, now, max_answers)[0]

    def submit_and_next(
        self, answer: NewAnswer, mode: Mode = "patch", exclude: tuple[int, ...] = (), max_answers: int | None = None
    ) -> tuple[StoredAnswer, NextTask]:
        """Store one answer and lease the worker's next question, in one transaction (one round trip, one commit).

        Whatever stops the next question from being handed out (nothing left, the session's answers
        given, the worker stopped, too many held) is reported in :class:`NextTask`; it never undoes
        the answer, which is acknowledged only after the commit, as with :meth:`submit`.
        """
        worker_id = answer.worker_id
        now = self.clock()
        if self.postgres:
            return self._submit_and_next_postgres(answer, mode, exclude, max_answers, now)
        with self._write() as session:
            stored, _ = self._store(session, answer, now, max_answers)
            known = None if stored.duplicate else stored  # a replay's count is the one it had then
            return stored, self._next_task_or_reason(
                lambda: self._next(session, worker_id, mode, exclude, max_answers, now, known)
            )

    def _submit_and_next_postgres(
        self, answer: NewAnswer, mode: Mode, exclude: tuple[int, ...], max_answers: int | None, now: float
    ) -> tuple[StoredAnswer, NextTask]:
        """:meth:`submit_and_next` on PostgreSQL: one transaction where leasing never waits for a lock.

        The answered question's row lock is held to the commit, so leasing the next question in the
        same transaction must not wait for another process's lock (two such transactions could each
        wait for the other's). Leasing a free question skips locked rows, so the usual answer is one
        transaction; when the next question would have to wait (everything free is locked, expired
        leases to hand on, the periodic sweep) or a deadlock aborts it anyway, the answer commits
        alone and the next question is leased in a transaction of its own.
        """
        entry = _GroupedAnswer(answer, max_answers, mode, exclude)
        gold = self._draws_gold(mode)
        piggyback = now < self._next_sweep
        try:
            with self._write() as session:
                stored, facts = self._store(session, answer, now, max_answers, mode if piggyback and not gold else None)
                following = self._following(session, entry, stored, facts, now, gold, piggyback)
        except Exception as exc:
            if self._grouped() or not is_deadlock(exc):  # a group's deadlock ends the group: each call runs alone
                raise
            with self._write() as session:
                stored, facts = self._store(session, answer, now, max_answers)
            following = None
        if following is not None:
            return stored, following
        if self._grouped():  # a group's transaction waits for no lock: leased after its commit
            return _AfterGroup(functools.partial(self._lease_alone, entry, stored, now, gold))  # type: ignore[return-value]
        return self._lease_alone(entry, stored, now, gold)

    def _following(
        self, session: Session, entry: _GroupedAnswer, stored: StoredAnswer, facts: _NextFacts | None, now: float,
        gold: bool, piggyback: bool,
    ) -> NextTask | None:  # fmt: skip
        """The next question of an answer's worker, leased in the answer's transaction without waiting for a
        lock; None when that would wait (it is then leased in a transaction of its own: :meth:`_lease_alone`)."""
        if facts is not None and facts.tried:
            # Leased by the statement that stored the answer, or nothing was free to take without waiting.
            return None if facts.leased is None else NextTask(self._assignment(facts.leased, self.lease_expiry(now)))
        if facts is None or not piggyback:
            return None
        answer = entry.answer
        try:
            return self._next_task_or_reason(
                lambda: self._next(
                    session, answer.worker_id, entry.mode, entry.exclude, entry.max_answers, now, stored, facts, False,
                    gold,
                )
            )  # fmt: skip
        except _WouldWait:
            return None

    def _lease_alone(
        self, entry: _GroupedAnswer, stored: StoredAnswer, now: float, gold: bool
    ) -> tuple[StoredAnswer, NextTask]:
        """An answer's next question, in a transaction of its own that may wait (the answer is committed)."""
        worker_id, mode, exclude, quota = entry.answer.worker_id, entry.mode, entry.exclude, entry.max_answers
        if stored.duplicate:
            return stored, self._next_task_or_reason(lambda: self.next_task(worker_id, mode, exclude, quota))
        return stored, self._next_task_or_reason(
            lambda: self._next_in_transaction(worker_id, mode, exclude, quota, now, stored, gold)
        )

    def _next_in_transaction(
        self, worker_id: int, mode: Mode, exclude: tuple[int, ...], max_answers: int | None, now: float,
        known: StoredAnswer, gold: bool,
    ) -> Assignment | None:  # fmt: skip
        """PostgreSQL: the next question after an answer, in a transaction of its own (see :meth:`next_task`)."""
        for attempt in range(1, HAND_OUT_ATTEMPTS + 1):
            try:
                with self._write() as session:
                    return self._next(session, worker_id, mode, exclude, max_answers, now, known, gold=gold)
            except Exception as exc:
                if not is_deadlock(exc) or attempt == HAND_OUT_ATTEMPTS:
                    raise
                self._after_deadlock(attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _after_deadlock(self, attempt: int) -> None:
        """Wait a random 0-5 ms times ``attempt`` before a hand-out's next try (see ``HAND_OUT_ATTEMPTS``)."""
        time.sleep(self.rng.uniform(0.0, 0.005 * attempt))

    @staticmethod
    def _next_task_or_reason(lease: Callable[[], Assignment | None]) -> NextTask:
        try:
            return NextTask(lease())
        except SessionComplete:
            return NextTask(None, "session_complete")
        except WorkerStopped:
            return NextTask(None, "stopped")
        except TooManyHeld:
            return NextTask(None, "too_many_held")

    def _store(
        self,
        session: Session,
        answer: NewAnswer,
        now: float,
        max_answers: int | None = None,
        then_lease: Mode | None = None,
    ) -> tuple[StoredAnswer, _NextFacts | None]:
        """:meth:`store` inside the caller's transaction; on PostgreSQL also what leasing the worker's next
        question needs, read by the same statement that stores the answer. The answer is written
        (:meth:`_write_answer`), then what it decides (:meth:`_decide`).
        """
        written = self._write_answer(session, answer, now, max_answers, then_lease)
        if isinstance(written, StoredAnswer):  # a replay
            return written, None
        if written.stops_worker and self._grouped():
            raise _GroupReadStale()
        stored = self._decide(session, written)
        return stored, None if written.stops_worker else written.facts  # a stopped worker gets no next question

    def _write_answer(
        self,
        session: Session,
        answer: NewAnswer,
        now: float,
        max_answers: int | None = None,
        then_lease: Mode | None = None,
    ) -> _Written | StoredAnswer:
        """An answer checked and written, or the answer stored before under its client id (a replay).

        Every refusal (:data:`.rules.REFUSALS`) is raised before the answer's first write.

        SQLite reads and writes in a statement per step; PostgreSQL reads everything under the
        question's lock in one call (``crowdpatch_answering``, see migration 0008) and writes in one
        statement (``STORE_POSTGRES``). The rules between reading and writing are the same. ``then_lease``
        (PostgreSQL): the mode of a next question to lease in that same statement, when the answer
        leaves the worker free to take one (``store_and_lease``; the facts say whether it was tried).
        """
        worker_id, task_id, client_id, seconds = answer.worker_id, answer.task_id, answer.client_id, answer.seconds
        if self.postgres:
            context = self._group_context(task_id, worker_id, client_id) or sql.ANSWERING_POSTGRES.scalar(
                session, task=task_id, worker=worker_id, client=client_id, lock_worker=max_answers is not None
            )
            row = None if context["task"] is None else SimpleNamespace(**context["task"])
            replay = context["replay"]
        else:
            row = sql.ANSWERING.one(session, client=client_id, task=task_id, worker=worker_id)
            replay = row is not None and row.replay
        if row is None or replay:
            replayed = self._replayed(session, worker_id, task_id, client_id)
            if replayed is not None:
                return replayed
        counted: list[tuple[int, Any]] | None = None
        if self.postgres:
            worker, given_before, finished = _counters_of(worker_id, context["worker"])
            counted = [(by, value) for by, value in context["counted"]]
        else:
            worker, given_before, finished = self._worker_counters(session, worker_id)
        check_session_open(finished, given_before, max_answers)
        if row is None or row.project_id != self.project_id or row.lease_id is None:
            # An expired lease whose slot went to another worker was deleted: its place is taken.
            raise not_leased(task_id)
        value = validate_answer(
            row.kind,
            answer.value,
            row.grid_size,
            (row.spec or {}).get("active"),
            image_size=self._image_size(session, row.image_id) if needs_image_size(row.kind) else None,
            choices=choice_count(row.kind, row.spec),
        )
        if row.kind != GOLD and row.state != "open":
            raise NotLeased(f"task {task_id} already has all its answers")

        def before() -> list[Any]:
            return [v for _, v in counted] if counted is not None else self._counted_values(session, task_id)

        if row.expires_at <= now and not late_answer_accepted(
            row.kind, False, before, row.votes_wanted, self.early_stop
        ):
            raise late_refusal(task_id)
        shown_at = row.leased_at if row.leased_at is not None else now
        if seconds is None:
            seconds = answer_seconds(answer.client_ms, shown_at, now)
        columns = answer_row(answer, value, shown_at, now, seconds)
        given = given_before + 1
        was_stopped = worker.banned
        judged = GivenAnswer(row.kind, value, seconds, row.gold_answer)
        facts = None
        if counted is not None:
            stopped = record_answer_quality(worker, judged, self.config.crowd, given, session)
            # After the quality check: the answer that gets its worker stopped does not count either.
            counted = counted if worker.banned else [*counted, (worker_id, value)]
            values = [v for _, v in counted]
            store = sql.STORE_POSTGRES
            leasing: dict[str, Any] = {}
            if then_lease and not (stopped or worker.banned) and quota_leaves_room(given, 0, max_answers):
                store = self.hand_out[then_lease].store_and_lease or store
                leasing = {
                    "project": self.project_id, "expires": self.lease_expiry(now), "busy": self._busy(),
                    "server": self.server_number,
                }  # fmt: skip
            written = store.one(
                session,
                **columns,
                **{name: getattr(worker, name) for name in WorkerCounters.COLUMNS},
                **leasing,
                lease=row.lease_id,
                answers=len(values),
                disagree=first_two_disagree(values),
                worker=worker_id,
                now=now,
            )
            answer_id = written.id
            facts = _NextFacts.read(written)
        else:
            answer_id = sql.INSERT_ANSWER.one(session, **columns).id
            sql.DROP_LEASE.run(session, lease=row.lease_id)
            stopped = record_answer_quality(worker, judged, self.config.crowd, given, session)
            self._worker_answered(session, worker)
            counted = self._counted(session, task_id)
            values = [v for _, v in counted]
            sql.ANSWERED.run(session, task=task_id, answers=len(values), disagree=first_two_disagree(values))
        return _Written(
            answer_id, task_id, row, counted, worker_id, stopped or worker.banned, worker.banned and not was_stopped,
            given, facts,
        )  # fmt: skip

    def _decide(self, session: Session, written: _Written) -> StoredAnswer:
        """What a written answer decides on its question, by the project's policy (closing it, what follows)."""
        row = written.question
        done = False
        created = 0
        if row.kind != GOLD:
            place = (self.project_id, row.image_id, row.region_id)
            question = QuestionFacts(written.task_id, row.kind, row.votes_wanted, place, row.key)
            outcome = self.policy.after_answer(session, self.config, question, written.counted)
            done, created = outcome.done, outcome.created
            if not done and outcome.votes_wanted != row.votes_wanted:
                # The hand-out query reads what the question now wants from its row.
                sql.SET_WANTED.run(session, task=written.task_id, wanted=outcome.votes_wanted)
            if session.new or session.dirty:
                session.flush()
        if written.stops_worker:
            self._release_stopped(session, written.worker_id)  # its leases are gone, and it gets no next question
        return replace(written.provisional, task_done=done, created_tasks=created)

    def _image_size(self, session: Session, image_id: int) -> tuple[int, int]:
        """An image's (width, height), read from the store once per image (an image never changes once added)."""
        size = self._image_sizes.get(image_id)
        if size is None:
            image = session.get(ImageRow, image_id)
            size = self._image_sizes[image_id] = (image.width, image.height)
        return size

    def _replayed(self, session: Session, worker_id: int, task_id: int, client_id: str) -> StoredAnswer | None:
        """The answer already stored under ``client_id`` (a client retrying), or None when there is none."""
        existing = sql.BY_CLIENT.one(session, client=client_id)
        if existing is None:
            return None
        check_replay(client_id, existing.worker_id, existing.task_id, worker_id, task_id)
        state = sql.TASK_STATE.scalar(session, task=task_id)
        given = sql.GIVEN_UP_TO.scalar(session, worker=worker_id, up_to=existing.id)
        return StoredAnswer(existing.id, task_id, True, state == "done", False, 0, given)

    def _worker_counters(self, session: Session, worker_id: int) -> tuple[WorkerCounters, int, bool]:
        """The worker's quality counters, how many answers it has given, and whether its session is finished."""
        return _counters_of(worker_id, sql.COUNTERS.one(session, worker=worker_id)._asdict())

    def _worker_answered(self, session: Session, worker: WorkerCounters) -> None:
        """The worker's row after one more answer: its answer count one up, its quality counters saved."""
        sql.WORKER_ANSWERED.run(
            session, worker=worker.id, **{name: getattr(worker, name) for name in WorkerCounters.COLUMNS}
        )

    def _release_stopped(self, session: Session, worker_id: int) -> None:
        """A worker just stopped: its answers stop counting and its leases free their slots."""
        task_ids = set(session.scalars(select(AnswerRow.task_id).where(AnswerRow.worker_id == worker_id)))
        task_ids |= set(session.scalars(select(LeaseRow.task_id).where(LeaseRow.worker_id == worker_id)))
        session.execute(delete(LeaseRow).where(LeaseRow.worker_id == worker_id))
        self._sync(session, sorted(task_ids))

    def answers_given(self, worker_id: int) -> int:
        with self.sessions() as session:
            return sql.GIVEN.scalar(session, worker=worker_id)

    def undo_last(self, worker_id: int, worker_session: str | None = None) -> Assignment:
        """Take back the worker's last answer while its question is still open; the question is leased back.

        ``worker_session``: only an answer given through that session (a server session's key) is taken
        back, so a session acts on its own answers alone. Refused once the session is finished
        (:class:`SessionComplete`), and while the worker holds as many questions as it may
        (:class:`TooManyHeld`): the lease it gets back counts like any other. The worker's quality
        counters lose the answer (:func:`~crowdpatch.crowd.quality.undo_answer_quality`).
        """
        now = self.clock()
        with self._write() as session:
            query = select(AnswerRow).where(AnswerRow.worker_id == worker_id)
            if worker_session is not None:
                query = query.where(AnswerRow.worker_session == worker_session)
            answer = session.scalar(query.order_by(AnswerRow.id.desc()).limit(1))
            if answer is None:
                raise NotLeased("nothing to undo")
            task = session.get(TaskRow, answer.task_id, with_for_update=self.postgres)
            worker = session.get(WorkerRow, worker_id)
            if worker.banned:
                raise WorkerStopped(worker.stopped_reason)
            if worker.finished_at is not None:
                raise SessionComplete("this session is finished: its answers can no longer be undone")
            if task.kind != GOLD and task.state != "open":
                raise NotLeased("that question is already decided; its answer can no longer be undone")
            held = len(sql.HELD.all(session, worker=worker_id, now=now))
            if held >= self.MAX_HELD:
                raise TooManyHeld(f"you hold {held} unanswered questions; answer one before taking an answer back")
            session.delete(answer)
            worker.answers_given = WorkerRow.answers_given - 1  # in SQL: an answer of another tab's is not lost
            session.flush()
            undone = GivenAnswer(task.kind, answer.value, answer.seconds, task.gold_answer)
            undo_answer_quality(session, worker, undone, self.config.crowd)
            session.execute(delete(LeaseRow).where(LeaseRow.task_id == task.id, LeaseRow.worker_id == worker_id))
            expires_at = self.lease_expiry(now)
            self._insert_lease(session, task, worker_id, now, expires_at)
            self._sync(session, [task.id])
            return assignment(
                task.kind, task.id, task.image_id, task.box, task.grid_size, task.spec, self.config.target, expires_at
            )
