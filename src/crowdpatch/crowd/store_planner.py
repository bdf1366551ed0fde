"""The server's planner: leases and answers in the database; the project's planner decides what is asked.

Any number of server processes share one store. Handing out a question is one transaction that
picks the highest-priority open question this worker has not seen whose answers plus leases are
below what it wants, locks it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent workers
spread over questions instead of queueing on one; SQLite has a single writer: the server's threads
and processes take turns by ``store.writer_lock`` and ``BEGIN IMMEDIATE``), re-checks it under the
lock and leases it. Storing an answer locks the question the
same way, so a question never gets more answers than wanted (gold aside), and whatever the answer
decides (:meth:`QuestionPlanner.after_answer`: done and what it creates, or how many answers it
now wants) is written in the same transaction.

Counting is done by counters on the task row (``answers_count``, ``leases_count``,
``answers_disagree``), changed in the same transaction as the rows they count, so the next
question is the first row of the ``ix_task_queue`` index that passes a few column tests: the
request path costs a handful of indexed statements whatever the number of open questions. The hot
statements are plain SQL (``text``), built once: building SQLAlchemy expressions per request cost
more than running them.

A lease holds its slot until it is answered, its question closes, or it has expired *and* its slot
is handed to another worker (the expired row is then deleted). So a late answer is accepted
exactly when nobody took its place, and expired leases do not pile up: those of closed questions
are deleted when the question closes, and a periodic sweep removes any left by other writers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, TypeVar

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.plain_sql import PlainStatements, cursor_of
from crowdpatch.crowd.planners import QuestionFacts, planner_for
from crowdpatch.crowd.planner import AnswerRejected, Assignment, validate_value, votes_target
from crowdpatch.crowd.quality_control import WorkerCounters, record_answer_quality
from crowdpatch.crowd.tasks import question_text, shown_kind, task_variant
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow, WorkerRow
from crowdpatch.store.writer_lock import WriterLock

Mode = Literal["patch", "polygon"]


class NotLeased(AnswerRejected):
    """The task is not (or no longer) this worker's to answer."""


class TooManyHeld(RuntimeError):
    """The worker holds as many unanswered questions as it may."""


class WorkerStopped(RuntimeError):
    """The worker fell below the quality bar and gets no more questions."""


class SessionComplete(RuntimeError):
    """The worker has given the answers its session asks for."""


REFUSALS = (AnswerRejected, TooManyHeld, WorkerStopped, SessionComplete)
"""What a planner call raises to refuse a request (a 4xx, or 204); it changes nothing in the store."""

T = TypeVar("T")


def _outcome(call: Callable[[], T]) -> T | Exception:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which raises it
        return exc


@dataclass(frozen=True)
class NextTask:
    """The question leased along with an answer (:meth:`StorePlanner.submit_and_next`), or why there is none."""

    assignment: Assignment | None
    reason: Literal["none", "session_complete", "stopped", "too_many_held"] | None = None
    """Why ``assignment`` is None: "none" when nothing is left for this worker."""

    def __post_init__(self) -> None:
        if self.assignment is None and self.reason is None:
            object.__setattr__(self, "reason", "none")


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


def wanted_sql(early_stop: bool, task: str = "t") -> str:
    """How many answers a question wants, in SQL over its row: :func:`votes_target` of the counters.

    The one place the hand-out query says "wanted"; it must agree with ``votes_target`` (which
    decides, in Python, when a question is done). A planner that wants a different number of
    answers changes both, and keeps on the task row whatever its rule reads (as ``answers_disagree``
    is kept for early stop).
    """
    if not early_stop:
        return f"{task}.votes_wanted"
    return f"(CASE WHEN {task}.votes_wanted <= 2 OR {task}.answers_disagree THEN {task}.votes_wanted ELSE 2 END)"


def _from_text(value: Any) -> Any:
    """A JSON column read by plain SQL on SQLite: its text (PostgreSQL's driver decodes ``json`` itself)."""
    return json.loads(value) if value is not None else None


def _decoded(value: Any) -> Any:
    return value


def _spec(value: Any) -> dict[str, Any]:
    """A task's ``spec`` however it arrives: JSON text (SQLite, plain SQL), a dict (PostgreSQL, the ORM), or none."""
    if value is None:
        return {}
    return json.loads(value) if isinstance(value, str) else value


_TASK_FIELDS = "t.id, t.kind, t.image_id, t.box, t.grid_size, t.spec"
_UNSEEN = (
    "NOT EXISTS (SELECT 1 FROM answer a WHERE a.task_id = t.id AND a.worker_id = :worker)"
    " AND NOT EXISTS (SELECT 1 FROM lease s WHERE s.task_id = t.id AND s.worker_id = :worker)"
)
_KINDS: dict[str, str] = {"patch": "('verify', 'outline', 'patch', 'grid', 'cell')", "polygon": "('polygon')"}


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
        bind = sessions.kw["bind"]
        self._sqlite_writer = WriterLock(None if self.postgres else bind.url.database)
        self._group = threading.local()
        """``session``: the transaction of :meth:`run_grouped` on the thread running it."""
        self._next_sweep = 0.0
        self._json: Callable[[Any], Any] = _decoded if self.postgres else _from_text
        self.scheme = planner_for(config)
        self.early_stop = self.scheme.uses_early_stop(config)
        self._statements = self._prepare()
        self._run = self._statements.run
        self._one = self._statements.one
        self.sync_counters()

    def _prepare(self) -> PlainStatements:
        """Every hot statement, built once (see the module docstring)."""
        wanted = wanted_sql(self.early_stop)
        # Only PostgreSQL re-checks a locked pick and may skip it (SQLite's single writer cannot race).
        skip = " AND t.id <> ALL(:skipped)" if self.postgres else ""
        statements = {
            "worker": "SELECT banned, stopped_reason, (SELECT count(*) FROM answer WHERE worker_id = :worker) FROM worker WHERE id = :worker",
            "held": (
                f"SELECT l.id, t.state, {_TASK_FIELDS} FROM lease l JOIN task t ON t.id = l.task_id"
                " WHERE l.worker_id = :worker AND l.expires_at > :now"
                " AND NOT EXISTS (SELECT 1 FROM answer a WHERE a.task_id = l.task_id AND a.worker_id = :worker)"
                " ORDER BY l.id"
            ),
            "extend": "UPDATE lease SET expires_at = :expires WHERE id = :lease",
            "lease": "INSERT INTO lease (task_id, worker_id, expires_at, leased_at) VALUES (:task, :worker, :expires, :now)",
            # Counters are set from an indexed count of the question's few rows, not incremented: a row
            # written by another writer (a test, the in-process simulator) cannot leave them off for long.
            "leased": "UPDATE task SET leases_count = (SELECT count(*) FROM lease WHERE task_id = :task) WHERE id = :task",
            "recheck": (
                f"SELECT t.state, t.answers_count + t.leases_count < {wanted}, "
                f"EXISTS (SELECT 1 FROM answer a WHERE a.task_id = t.id AND a.worker_id = :worker) "
                f"OR EXISTS (SELECT 1 FROM lease s WHERE s.task_id = t.id AND s.worker_id = :worker) FROM task t WHERE t.id = :task"
            ),
            "drop_lease": "DELETE FROM lease WHERE id = :lease",
            "any_expired": "SELECT 1 FROM lease WHERE expires_at <= :now LIMIT 1",
            "has_open": (
                f"SELECT 1 FROM task WHERE project_id = :project AND state = 'open' AND kind IN {_KINDS['patch']} LIMIT 1"
            ),
            "gold": (
                f"SELECT {_TASK_FIELDS} FROM task t WHERE t.project_id = :project AND t.kind = 'gold' AND {_UNSEEN}"
                " ORDER BY random() LIMIT 1"
            ),
            "by_client": "SELECT id, worker_id, task_id FROM answer WHERE client_id = :client",
            # PostgreSQL: the question's row lock first; "answering" (a statement of its own, so a snapshot
            # taken once the lock is held) then sees any lease another process deleted meanwhile.
            "lock_task": "SELECT 1 FROM task WHERE id = :task FOR UPDATE",
            # What an answer needs to know, in one statement: whether its client id was seen (a replay), the
            # question, and this worker's lease on it (none: not leased, or its slot went to someone else).
            "answering": (
                "SELECT EXISTS (SELECT 1 FROM answer a WHERE a.client_id = :client),"
                " t.project_id, t.kind, t.state, t.image_id, t.grid_size, t.gold_answer, t.votes_wanted, t.spec, t.region_id, t.key,"
                " l.id, l.expires_at, l.leased_at"
                " FROM task t LEFT JOIN lease l ON l.task_id = t.id AND l.worker_id = :worker WHERE t.id = :task"
            ),
            "answer": (
                "INSERT INTO answer (task_id, worker_id, value, client_id, shown_at, answered_at, client_ms, seconds, time_source)"
                " VALUES (:task, :worker, CAST(:value AS JSON), :client, :shown, :answered, :client_ms, :seconds, :source) RETURNING id"
            ),
            "answered": (
                "UPDATE task SET answers_count = :answers, leases_count = (SELECT count(*) FROM lease WHERE task_id = :task),"
                " answers_disagree = :disagree WHERE id = :task"
            ),
            "effective": (
                "SELECT a.worker_id, a.value FROM answer a JOIN worker w ON w.id = a.worker_id"
                " WHERE a.task_id = :task AND NOT w.banned ORDER BY a.id"
            ),
            "given": "SELECT count(*) FROM answer WHERE worker_id = :worker",
            "counters": (
                f"SELECT {', '.join(WorkerCounters.COLUMNS)}, (SELECT count(*) FROM answer WHERE worker_id = :worker)"
                " FROM worker WHERE id = :worker"
            ),
            "save_counters": (
                "UPDATE worker SET attributes = CAST(:attributes AS JSON), "
                + ", ".join(f"{name} = :{name}" for name in WorkerCounters.COLUMNS[1:])
                + " WHERE id = :worker"
            ),
            "close_leases": "DELETE FROM lease WHERE task_id = :task",
            "no_leases": "UPDATE task SET leases_count = 0 WHERE id = :task",
            "sweep": (
                "DELETE FROM lease WHERE expires_at <= :before AND task_id IN"
                " (SELECT id FROM task WHERE project_id = :project AND (state <> 'open' OR kind = 'gold'))"
            ),
        }
        for mode, kinds in _KINDS.items():
            statements[f"pick_{mode}"] = (
                f"SELECT {_TASK_FIELDS} FROM task t WHERE t.project_id = :project AND t.state = 'open'"
                f" AND t.kind IN {kinds} AND t.answers_count + t.leases_count < {wanted} AND {_UNSEEN}"
                f"{skip} ORDER BY t.priority, t.level, t.id LIMIT 1"
            )
            # An expired lease's slot, handed to this worker (the row is deleted: its holder's place is taken).
            # The few expired leases (ix_lease_expires_at) are read first, then their questions: both SQLite
            # and PostgreSQL otherwise walked every open question in queue order (4 ms and 8-75 ms per
            # request with 2,500 open questions).
            statements[f"reclaim_{mode}"] = (
                "WITH expired AS MATERIALIZED (SELECT id, task_id FROM lease WHERE expires_at <= :now AND worker_id <> :worker)"
                f" SELECT l.id, {_TASK_FIELDS} FROM expired l CROSS JOIN task t"
                f" WHERE t.id = l.task_id AND t.project_id = :project AND t.state = 'open'"
                f" AND t.kind IN {kinds} AND t.answers_count + t.leases_count - 1 < {wanted} AND {_UNSEEN}"
                f"{skip} ORDER BY t.priority, t.level, t.id LIMIT 1"
            )
        for name in [name for name in statements if name.startswith(("pick_", "reclaim_"))]:
            if self.postgres:
                statements[name + "_wait"] = statements[name] + " FOR UPDATE OF t"
                statements[name] += " FOR UPDATE OF t SKIP LOCKED"
        return PlainStatements(statements, self.postgres)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        group = getattr(self._group, "session", None)
        if group is not None:  # inside run_grouped, on its thread: the group's transaction
            yield group
            return
        if self.postgres:
            with self.sessions.begin() as session:
                yield session
            return
        with self._sqlite_writer, self.sessions.begin() as session:
            # The write lock from the first statement on, so what is read is what is written over.
            cursor_of(session).execute("BEGIN IMMEDIATE")
            yield session

    def run_grouped(self, calls: list[Callable[[], T]]) -> list[T | Exception]:
        """Run planner calls (``submit``, ``next_task``...) in one SQLite transaction: one commit for all.

        Group commit: a commit costs as much as the rest of an answer together (the WAL frames of
        every page the transaction touched are written; concurrent answers touch the same pages), so
        the server stores the answers that arrive together in one transaction. Each call runs in a
        savepoint: one that fails with a refusal (409, 422, nothing left...) is rolled back alone and
        gets its exception; the others are kept. Any other failure (a database error, the commit
        itself) abandons the whole group, nothing of it stored, and each call is then run again in a
        transaction of its own: one bad request cannot take its neighbours' answers down with it,
        and nothing is acknowledged before the commit that holds it. Returns each call's result or
        exception, in order.
        PostgreSQL (row locks, many processes) runs each call in its own transaction.
        """
        if self.postgres or len(calls) == 1:
            return [_outcome(call) for call in calls]
        try:
            with self._sqlite_writer, self.sessions.begin() as session:
                cursor = cursor_of(session)
                cursor.execute("BEGIN IMMEDIATE")  # pysqlite would start it only at the first write; savepoints need one
                self._group.session = session
                try:
                    results = [self._in_savepoint(session, cursor, call) for call in calls]
                finally:
                    self._group.session = None
        except Exception:  # noqa: BLE001 - each call is retried alone, and reports its own error
            return [_outcome(call) for call in calls]
        return results

    def _in_savepoint(self, session: Session, cursor: Any, call: Callable[[], T]) -> T | Exception:
        cursor.execute("SAVEPOINT grouped_call")
        try:
            result: T | Exception = call()
            if session.new or session.dirty or session.deleted:
                session.flush()
        except REFUSALS as exc:
            cursor.execute("ROLLBACK TO grouped_call")
            result = exc
        cursor.execute("RELEASE grouped_call")
        # The next call starts from the database, as it would in a transaction of its own (and
        # nothing the rolled-back call loaded or added lingers).
        session.expunge_all()
        return result

    # -- counting ------------------------------------------------------------------------------

    def _effective_answers(self, session: Session, task_id: int) -> list[tuple[int, Any]]:
        """(worker, value) of the answers that count toward a question (a stopped worker's do not), oldest first."""
        return [(worker, self._json(value)) for worker, value in self._run(session, "effective", task=task_id).fetchall()]

    def _effective_values(self, session: Session, task_id: int) -> list[Any]:
        return [value for _, value in self._effective_answers(session, task_id)]

    def sync_counters(self, task_ids: Iterable[int] | None = None) -> int:
        """Recompute the task rows' counters from the answer and lease rows; returns how many were wrong.

        Run when the planner starts (answers may have been stored by another writer, such as the
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
        for task_id, answers, leases, disagree in wrong:
            session.execute(
                text("UPDATE task SET answers_count = :a, leases_count = :l, answers_disagree = :d WHERE id = :task"),
                {"a": answers, "l": leases, "d": disagree, "task": task_id},
            )
        return len(wrong)

    def _wrong_counters(self, session: Session, task_ids: list[int] | None, lock: bool) -> list[tuple[int, int, int, bool]]:
        """Open questions whose counters differ from their rows, with the right values."""
        sql = (
            "SELECT t.id, t.answers_count, t.leases_count, t.answers_disagree,"
            " (SELECT count(*) FROM answer a JOIN worker w ON w.id = a.worker_id WHERE a.task_id = t.id AND NOT w.banned),"
            " (SELECT count(*) FROM lease l WHERE l.task_id = t.id)"
            " FROM task t WHERE t.project_id = :project AND t.state = 'open'"
        )
        params: dict[str, Any] = {"project": self.project_id}
        if task_ids is not None:
            sql += " AND t.id IN :ids"
            params["ids"] = task_ids
        if lock:
            sql += " ORDER BY t.id FOR UPDATE OF t"
        statement = text(sql)
        if task_ids is not None:
            statement = statement.bindparams(bindparam("ids", expanding=True))
        wrong = []
        for task_id, answers, leases, disagree, true_answers, true_leases in session.execute(statement, params).all():
            true_disagree = False
            if true_answers >= 2:
                values = self._effective_values(session, task_id)
                true_disagree = values[0] != values[1]
            if (answers, leases, bool(disagree)) != (true_answers, true_leases, true_disagree):
                wrong.append((task_id, true_answers, true_leases, true_disagree))
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
        with self._write() as session:
            return self._next(session, worker_id, mode, exclude, max_answers, now)

    def _next(
        self, session: Session, worker_id: int, mode: Mode, exclude: tuple[int, ...], max_answers: int | None, now: float,
        known: StoredAnswer | None = None,
    ) -> Assignment | None:
        """:meth:`next_task` inside the caller's transaction; ``known``: the worker's answer just stored in it
        (which says whether the worker is stopped and how many answers it has given: one statement less)."""
        row = (known.worker_stopped, "stopped", known.answers_given) if known else self._one(session, "worker", worker=worker_id)
        if row is not None and max_answers is not None and row[2] >= max_answers:
            raise SessionComplete(f"{row[2]} answers given")
        if row is None or row[0]:
            raise WorkerStopped(row[1] if row else "unknown worker")
        if now >= self._next_sweep:
            self._sweep(session, now)
        expires_at = now + self.config.crowd.lease_seconds
        held = self._run(session, "held", worker=worker_id, now=now).fetchall()
        for lease_id, state, *task in held:
            if task[0] not in exclude and (state == "open" or task[1] == "gold"):
                self._run(session, "extend", lease=lease_id, expires=expires_at)
                return self._assignment(task, expires_at)
        if len(held) >= self.MAX_HELD:
            raise TooManyHeld(f"you hold {len(held)} unanswered questions; answer them first")
        task = None
        if mode == "patch" and self.config.crowd.gold_rate > 0 and self.rng.random() < self.config.crowd.gold_rate:
            task = self._pick_gold(session, worker_id)
        if task is None:
            task = self._pick_open(session, worker_id, mode, now)
        if task is None:
            return None
        self._run(session, "lease", task=task[0], worker=worker_id, expires=expires_at, now=now)
        self._run(session, "leased", task=task[0])
        return self._assignment(task, expires_at)

    def _sweep(self, session: Session, now: float) -> None:
        """Delete leases that expired a lease period ago on closed (or gold) questions: nobody answers them now."""
        grace = self.config.crowd.lease_seconds
        self._run(session, "sweep", before=now - grace, project=self.project_id)
        self._next_sweep = now + grace / 4

    def _pick_gold(self, session: Session, worker_id: int) -> tuple | None:
        if self._one(session, "has_open", project=self.project_id) is None:
            return None
        return self._one(session, "gold", project=self.project_id, worker=worker_id)

    def _pick_open(self, session: Session, worker_id: int, mode: Mode, now: float) -> tuple | None:
        """The first question in priority order with a slot for this worker, locked; expired slots first.

        An expired lease whose question still wants its answer is overdue work, so it is handed on
        before fresh slots; its row is deleted, which is what refuses its holder's late answer.
        """
        params = {"project": self.project_id, "worker": worker_id, "now": now}
        # Nearly always no lease has expired: one probe of ix_lease_expires_at then spares the join
        # (on PostgreSQL its plan walked the open questions: 75 ms per request, twice with the wait).
        expired = self._one(session, "any_expired", now=now) is not None
        for name in (f"reclaim_{mode}", f"pick_{mode}") if expired else (f"pick_{mode}",):
            skipped: list[int] = [-1]
            # SKIP LOCKED spreads concurrent workers over questions; when everything wanted is locked
            # by someone else at this instant, a plain lock waits instead of wrongly answering "none".
            for variant in (name, name + "_wait") if self.postgres else (name,):
                while True:
                    row = self._one(session, variant, skipped=skipped, **params)
                    if row is None:
                        break
                    lease_id, task = (row[0], tuple(row[1:])) if name.startswith("reclaim") else (None, tuple(row))
                    if self.postgres and not self._still_free(session, task[0], worker_id, reclaiming=lease_id is not None):
                        skipped.append(task[0])
                        continue
                    if lease_id is not None:
                        # Another process may have handed on the same expired lease while this one waited
                        # for the question's lock (the lock re-checks the task row, not the lease row).
                        # (SQLite's single writer cannot race: there the row is always still there.)
                        deleted = self._run(session, "drop_lease", lease=lease_id).rowcount
                        if self.postgres and deleted != 1:
                            skipped.append(task[0])
                            continue
                        self._run(session, "leased", task=task[0])
                    return task
        return None

    def _still_free(self, session: Session, task_id: int, worker_id: int, reclaiming: bool) -> bool:
        """Re-check under the lock: this statement sees whatever committed while the pick was running."""
        state, free, seen = self._one(session, "recheck", task=task_id, worker=worker_id)
        return state == "open" and not seen and (reclaiming or bool(free))

    def _assignment(self, task: tuple | Any, expires_at: float) -> Assignment:
        task_id, kind, image_id, box, grid_size, spec = task
        active = _spec(spec).get("active")
        return Assignment(
            task_id=task_id,
            kind=shown_kind(kind),
            image_id=image_id,
            box=Box.from_list(json.loads(box) if isinstance(box, str) else box),  # text on SQLite
            grid_size=grid_size,
            question=question_text(kind, self.config.target),
            lease_expires_at=expires_at,
            variant=task_variant(kind),
            active_cells=tuple(active) if active is not None else None,
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
        """Store one answer and everything it decides; the same ``client_id`` again returns the stored one.

        The answer is acknowledged (this returns) only after its transaction commits.
        """
        now = self.clock()
        with self._write() as session:
            return self._store(session, worker_id, task_id, value, client_id, client_ms, time_source, now)

    def submit_and_next(
        self,
        worker_id: int,
        task_id: int,
        value: Any,
        *,
        client_id: str,
        client_ms: int | None,
        time_source: str = "measured",
        mode: Mode = "patch",
        exclude: tuple[int, ...] = (),
        max_answers: int | None = None,
    ) -> tuple[StoredAnswer, NextTask]:
        """Store one answer and lease the worker's next question, in one transaction (one round trip, one commit).

        Whatever stops the next question from being handed out (nothing left, the session's answers
        given, the worker stopped, too many held) is reported in :class:`NextTask`; it never undoes
        the answer, which is acknowledged only after the commit, as with :meth:`submit`.
        """
        if self.postgres:
            # Two transactions: leasing the next question may wait for another process's row lock,
            # which must not happen while this one holds the answered question's (a deadlock).
            stored = self.submit(worker_id, task_id, value, client_id=client_id, client_ms=client_ms, time_source=time_source)
            return stored, self._next_task_or_reason(lambda: self.next_task(worker_id, mode, exclude, max_answers))
        now = self.clock()
        with self._write() as session:
            stored = self._store(session, worker_id, task_id, value, client_id, client_ms, time_source, now)
            known = None if stored.duplicate else stored  # a replay's count is the one it had then
            return stored, self._next_task_or_reason(lambda: self._next(session, worker_id, mode, exclude, max_answers, now, known))

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
        self, session: Session, worker_id: int, task_id: int, value: Any, client_id: str, client_ms: int | None, time_source: str, now: float
    ) -> StoredAnswer:
        """:meth:`submit` inside the caller's transaction."""
        if self.postgres:
            self._run(session, "lock_task", task=task_id)
        row = self._one(session, "answering", client=client_id, task=task_id, worker=worker_id)
        if row is None or row[0]:
            replayed = self._replayed(session, worker_id, task_id, client_id)
            if replayed is not None:
                return replayed
        not_leased = NotLeased(f"task {task_id} is not leased to you (or your lease expired and went to someone else)")
        if row is None:
            raise not_leased
        _, project_id, kind, state, image_id, grid_size, gold_answer, votes_wanted, spec, region_id, key, lease_id, lease_expires_at, leased_at = row
        if project_id != self.project_id or lease_id is None:
            # An expired lease whose slot went to another worker was deleted: its place is taken.
            raise not_leased
        if kind == "polygon":
            image = session.get(ImageRow, image_id)
            value = validate_polygon(value, image.width, image.height)
        else:
            value = validate_value(kind, value, grid_size, _spec(spec).get("active"))
        if kind != "gold":
            if state != "open":
                raise NotLeased(f"task {task_id} already has all its answers")
            if lease_expires_at <= now:
                # The lease still holds its slot (nobody took its place): the late answer is honest work,
                # refused only when the question's wants shrank (a ban) and it would over-ask.
                given_values = self._effective_values(session, task_id)
                if len(given_values) >= votes_target(given_values, votes_wanted, self.early_stop):
                    raise NotLeased(f"your lease on task {task_id} expired and others answered it")
        shown_at = leased_at if leased_at is not None else now
        seconds = client_ms / 1000.0 if client_ms is not None and client_ms > 0 else now - shown_at
        answer_id = self._insert_answer(session, task_id, worker_id, value, client_id, shown_at, now, client_ms, seconds, time_source)
        self._run(session, "drop_lease", lease=lease_id)
        worker, given = self._worker_counters(session, worker_id)
        was_banned = worker.banned
        stopped = record_answer_quality(worker, kind, self._json(gold_answer), value, seconds, self.config.crowd, given, session=session)
        self._save_counters(session, worker)
        # After the quality check: the answer that gets its worker stopped does not count either.
        answers = self._effective_answers(session, task_id)
        values = [v for _, v in answers]
        disagree = len(values) >= 2 and values[0] != values[1]
        self._run(session, "answered", task=task_id, answers=len(values), disagree=disagree)
        done = False
        if kind != "gold":
            facts = QuestionFacts(task_id, kind, image_id, votes_wanted, self.project_id, region_id, key)
            quick = self.scheme.quick_outcome(session, self.config, facts, values)
            done = quick.done if quick is not None else self._decide(session, task_id, answers)
            if done:
                self._run(session, "close_leases", task=task_id)
                self._run(session, "no_leases", task=task_id)
        if worker.banned and not was_banned:
            self._release_stopped(session, worker_id)
        return StoredAnswer(answer_id, task_id, False, done, stopped or worker.banned, given)

    def _decide(self, session: Session, task_id: int, answers: list[tuple[int, Any]]) -> bool:
        """What the answers so far decide (the project's planner): True when the question is done.

        A question that wants more answers keeps its new ``votes_wanted`` on the row, where the
        hand-out query reads it. On PostgreSQL two processes may close neighbouring windows at the
        same moment and both create the window they share (asked once: one row per region, kind and
        key); the decision locks the image first (``decisions.lock_image``), and a unique-key
        failure that still slips through is retried in a savepoint, where it finds the other's row.
        """
        def decide() -> bool:
            task = session.get(TaskRow, task_id)
            outcome = self.scheme.after_answer(session, self.project_id, self.config, task, answers)
            if not outcome.done:
                task.votes_wanted = outcome.votes_wanted
            session.flush()
            return outcome.done

        if not self.postgres:
            return decide()
        for attempt in range(3):
            try:
                with session.begin_nested():
                    return decide()
            except IntegrityError:
                if attempt == 2:
                    raise
        return False

    def _replayed(self, session: Session, worker_id: int, task_id: int, client_id: str) -> StoredAnswer | None:
        """The answer already stored under ``client_id`` (a client retrying), or None when there is none."""
        existing = self._one(session, "by_client", client=client_id)
        if existing is None:
            return None
        answer_id, owner, answered_task = existing
        if owner != worker_id or answered_task != task_id:
            raise NotLeased(f"client id {client_id!r} was used for another answer")
        state = session.scalar(select(TaskRow.state).where(TaskRow.id == task_id))
        given = self._answers_given(session, worker_id, up_to=answer_id)
        return StoredAnswer(answer_id, task_id, True, state == "done", False, given)

    def _worker_counters(self, session: Session, worker_id: int) -> tuple[WorkerCounters, int]:
        """The worker's quality counters, and how many answers it has given."""
        attributes, *counts, banned, reason, given = self._one(session, "counters", worker=worker_id)
        return WorkerCounters(worker_id, self._json(attributes), *counts, bool(banned), reason), given

    def _save_counters(self, session: Session, worker: WorkerCounters) -> None:
        values = {name: getattr(worker, name) for name in WorkerCounters.COLUMNS}
        values["attributes"] = json.dumps(worker.attributes)
        self._run(session, "save_counters", worker=worker.id, **values)

    def _insert_answer(
        self, session: Session, task_id: int, worker_id: int, value: Any, client_id: str,
        shown_at: float, answered_at: float, client_ms: int | None, seconds: float, time_source: str,
    ) -> int:
        params = {
            "task": task_id, "worker": worker_id, "value": json.dumps(value), "client": client_id, "shown": shown_at,
            "answered": answered_at, "client_ms": client_ms, "seconds": seconds, "source": time_source,
        }
        return self._one(session, "answer", **params)[0]

    def _release_stopped(self, session: Session, worker_id: int) -> None:
        """A worker just stopped: its answers stop counting and its leases free their slots."""
        task_ids = set(session.scalars(select(AnswerRow.task_id).where(AnswerRow.worker_id == worker_id)))
        task_ids |= set(session.scalars(select(LeaseRow.task_id).where(LeaseRow.worker_id == worker_id)))
        session.execute(delete(LeaseRow).where(LeaseRow.worker_id == worker_id))
        self._sync(session, sorted(task_ids))

    def _answers_given(self, session: Session, worker_id: int, up_to: int | None = None) -> int:
        if up_to is None:
            return self._one(session, "given", worker=worker_id)[0]
        return session.scalar(text("SELECT count(*) FROM answer WHERE worker_id = :worker AND id <= :up_to"), {"worker": worker_id, "up_to": up_to})

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
            session.flush()
            self._sync(session, [task.id])
            return self._assignment((task.id, task.kind, task.image_id, task.box, task.grid_size, task.spec), expires_at)
