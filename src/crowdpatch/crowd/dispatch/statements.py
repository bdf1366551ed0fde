"""The database dispatcher's statements, written once for both backends (SQLite and PostgreSQL).

Each is a :class:`~crowdpatch.store.sql.Statement`: SQL with ``:named`` parameters and the types of
its JSON parameters and result columns. The hand-out queries depend on the project's counting rule
(:func:`~crowdpatch.crowd.votes.wanted_sql`) and on the backend: only PostgreSQL has row locks, so
only there a pick is locked (``FOR UPDATE SKIP LOCKED``, with a waiting variant), re-checked and
maybe skipped; SQLite has one writer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Boolean

from crowdpatch.crowd.kinds import GOLD, OPEN_PIPELINE_SQL, PIPELINE_KINDS, POLYGON, sql_list
from crowdpatch.crowd.quality import WorkerCounters
from crowdpatch.crowd.votes import wanted_sql
from crowdpatch.store.db import Backend
from crowdpatch.store.models import AnswerRow, TaskRow, WorkerRow
from crowdpatch.store.sql import Statement

_TASK = TaskRow.__table__.c
_JSON = _TASK.spec.type
TASK_COLUMNS = {
    "id": None, "kind": None, "image_id": None, "box": _JSON, "grid_size": None, "spec": _JSON,
    "image_width": None, "image_height": None,
}  # fmt: skip
"""What handing a question out reads of it (:func:`~.rules.assignment`), its image's size included: the
worker's page needs it, and a server process would otherwise look each image up on its own (a round trip
per image it had not yet handed out, on PostgreSQL)."""
_TASK_FIELDS = (
    "t.id, t.kind, t.image_id, t.box, t.grid_size, t.spec,"
    " (SELECT i.width FROM image i WHERE i.id = t.image_id) AS image_width,"
    " (SELECT i.height FROM image i WHERE i.id = t.image_id) AS image_height"
)
_UNSEEN = (
    "NOT EXISTS (SELECT 1 FROM answer a WHERE a.task_id = t.id AND a.worker_id = :worker)"
    " AND NOT EXISTS (SELECT 1 FROM lease s WHERE s.task_id = t.id AND s.worker_id = :worker)"
)
MODE_KINDS: dict[str, tuple[str, ...]] = {"patch": PIPELINE_KINDS, "polygon": (POLYGON,)}
"""The kinds a worker in each mode answers (gold is mixed into patch mode separately)."""
COUNTED_KINDS_SQL = sql_list(tuple(kind for kinds in MODE_KINDS.values() for kind in kinds))
"""The kinds handed out by their row's counters; a gold question is picked by who has not seen it, so its
counters are never read (and the counter sync at start skips the two gold questions each image keeps open)."""

WORKER = Statement(
    "SELECT banned, stopped_reason, finished_at IS NOT NULL AS finished,"
    " answers_given AS given FROM worker WHERE id = :worker",
    columns={"banned": Boolean(), "stopped_reason": None, "finished": Boolean(), "given": None},
)
_LIVE = "l.worker_id = :worker AND l.expires_at > :now"
"""The worker's live leases (``l``). A statement that tests them more than once reads them once, into a
``MATERIALIZED`` CTE: until the next vacuum, the worker's index entries include every lease it answered."""


def _held(leases: str = "lease", also: str = "") -> str:
    """The worker's live unanswered leases with their questions, from ``leases`` (the table, or a CTE of it),
    that also pass ``also``."""
    return (
        f"SELECT l.id AS lease_id, t.state, {_TASK_FIELDS} FROM {leases} l JOIN task t ON t.id = l.task_id"
        f" WHERE {_LIVE}{also}"
        # LIMIT ... OFFSET keeps the test a probe of the answer's (question, worker) key per held lease: as a
        # join, PostgreSQL may read every answer the worker ever gave instead, a history that grows all study long.
        " AND NOT EXISTS (SELECT 1 FROM answer a WHERE a.task_id = l.task_id AND a.worker_id = :worker"
        " LIMIT 1 OFFSET 0)"
    )


HELD = Statement(_held() + " ORDER BY l.id", columns={"lease_id": None, "state": None, **TASK_COLUMNS})
# Whether any lease has expired, from the first entry of ix_lease_expires_at (min() reads an index end).
# Written as EXISTS, a generic plan read the whole lease table, whose heap holds every lease deleted since
# the last vacuum: one per answer.
_ANY_EXPIRED = "coalesce((SELECT min(expires_at) FROM lease) <= :now, false)"


def _next_facts(leases: str = "lease", also: str = "") -> str:
    """PostgreSQL: HELD (as JSON, from ``leases``, the leases that also pass ``also``) and ANY_EXPIRED as two
    columns, for statements that read them beside others."""
    return (
        f"(SELECT coalesce(json_agg(h ORDER BY h.lease_id), '[]'::json) FROM ({_held(leases, also)}) h) AS held,"
        f" {_ANY_EXPIRED} AS expired"
    )


_NEXT_FACTS = _next_facts()
# PostgreSQL: WORKER, HELD and ANY_EXPIRED in one statement.
NEXT_FACTS_POSTGRES = Statement(
    "SELECT banned, stopped_reason, finished_at IS NOT NULL AS finished,"
    f" answers_given AS given, {_NEXT_FACTS} FROM worker WHERE id = :worker",
    columns={
        "banned": Boolean(),
        "stopped_reason": None,
        "finished": Boolean(),
        "given": None,
        "held": None,
        "expired": Boolean(),
    },
)
EXTEND = Statement("UPDATE lease SET expires_at = :expires WHERE id = :lease")
LEASE = Statement(
    "INSERT INTO lease (task_id, worker_id, expires_at, leased_at, server, image_id)"
    " VALUES (:task, :worker, :expires, :now, :server, :image)"
)
# Counters are set from an indexed count of the question's few rows, not incremented: a row written by
# another writer (a test, the in-process simulator) cannot leave them off for long.
LEASED = Statement("UPDATE task SET leases_count = (SELECT count(*) FROM lease WHERE task_id = :task) WHERE id = :task")
DROP_LEASE = Statement("DELETE FROM lease WHERE id = :lease")
ANY_EXPIRED = Statement(f"SELECT {_ANY_EXPIRED} AS expired", columns={"expired": Boolean()})
# ix_task_open_pipeline, partial on exactly OPEN_PIPELINE_SQL: gold questions stay open all study long, so
# walking the open questions instead would pass every finished image's gold ones first.
HAS_OPEN = Statement(f"SELECT 1 FROM task WHERE project_id = :project AND {OPEN_PIPELINE_SQL} LIMIT 1")
# Two subqueries, each one end of ix_task_gold: SQLite answers min() and max() from an index only when
# one of them is alone in its query (together they scan every gold question, two per image).
_GOLD = f"FROM task WHERE project_id = :project AND kind = '{GOLD}'"
GOLD_IDS = Statement(
    f"SELECT (SELECT min(id) {_GOLD}) AS first, (SELECT max(id) {_GOLD}) AS last", columns={"first": None, "last": None}
)
# From a random id on (ix_task_gold), the first gold question the worker has not seen; the caller wraps around.
GOLD_PICK = Statement(
    f"SELECT {_TASK_FIELDS} FROM task t WHERE t.project_id = :project AND t.kind = '{GOLD}' AND t.id >= :start"
    f" AND {_UNSEEN} ORDER BY t.id LIMIT 1",
    columns=TASK_COLUMNS,
)
BY_CLIENT = Statement(
    "SELECT id, worker_id, task_id FROM answer WHERE client_id = :client",
    columns={"id": None, "worker_id": None, "task_id": None},
)
TASK_STATE = Statement("SELECT state FROM task WHERE id = :task", columns={"state": None})
# What an answer needs to know, in one statement: whether its client id was seen (a replay), the
# question, and this worker's lease on it (none: not leased, or its slot went to someone else).
ANSWERING = Statement(
    "SELECT EXISTS (SELECT 1 FROM answer a WHERE a.client_id = :client) AS replay,"
    " t.project_id, t.kind, t.state, t.image_id, t.grid_size, t.gold_answer, t.votes_wanted, t.spec,"
    " t.region_id, t.key,"
    " l.id AS lease_id, l.expires_at, l.leased_at"
    " FROM task t LEFT JOIN lease l ON l.task_id = t.id AND l.worker_id = :worker WHERE t.id = :task",
    columns={
        "replay": Boolean(),
        "project_id": None,
        "kind": None,
        "state": None,
        "image_id": None,
        "grid_size": None,
        "gold_answer": _TASK.gold_answer.type,
        "votes_wanted": None,
        "spec": _JSON,
        "region_id": None,
        "key": None,
        "lease_id": None,
        "expires_at": None,
        "leased_at": None,
    },
)
INSERT_ANSWER = Statement(
    "INSERT INTO answer (task_id, worker_id, value, client_id, shown_at, answered_at, client_ms, seconds, time_source,"
    " worker_session) VALUES (:task_id, :worker_id, :value, :client_id, :shown_at, :answered_at, :client_ms, :seconds,"
    " :time_source, :worker_session)"
    " RETURNING id",
    params={"value": AnswerRow.__table__.c.value.type},
    columns={"id": None},
)
ANSWERED = Statement(
    "UPDATE task SET answers_count = :answers, leases_count = (SELECT count(*) FROM lease WHERE task_id = :task),"
    " answers_disagree = :disagree WHERE id = :task"
)
COUNTED = Statement(
    "SELECT a.worker_id, a.value FROM answer a JOIN worker w ON w.id = a.worker_id"
    " WHERE a.task_id = :task AND NOT w.banned ORDER BY a.id",
    columns={"worker_id": None, "value": AnswerRow.__table__.c.value.type},
)
"""The answers that count toward a question (a stopped worker's do not), oldest first."""
GIVEN = Statement("SELECT answers_given FROM worker WHERE id = :worker")
GIVEN_UP_TO = Statement("SELECT count(*) FROM answer WHERE worker_id = :worker AND id <= :up_to")
COUNTERS = Statement(
    f"SELECT {', '.join(WorkerCounters.COLUMNS)}, finished_at IS NOT NULL AS finished,"
    " answers_given AS given FROM worker WHERE id = :worker",
    columns={
        **{name: None for name in WorkerCounters.COLUMNS},
        "attributes": WorkerRow.__table__.c.attributes.type,
        "banned": Boolean(),
        "finished": Boolean(),
        "given": None,
    },
)
_ANSWERED_BY = "answers_given = answers_given + 1, " + ", ".join(f"{name} = :{name}" for name in WorkerCounters.COLUMNS)
"""A worker's row after one more answer: its count one up (in SQL: no write is lost), its quality counters set."""
WORKER_ANSWERED = Statement(
    f"UPDATE worker SET {_ANSWERED_BY} WHERE id = :worker", params={"attributes": WorkerRow.__table__.c.attributes.type}
)
# PostgreSQL: one call of the function migrations 0008 and 0010 install locks the question (and the worker,
# when its session has a quota), then reads with a fresh snapshot what ANSWERING, COUNTERS and COUNTED read.
ANSWERING_POSTGRES = Statement(
    "SELECT crowdpatch_answering(:task, :worker, :client, :lock_worker) AS context", columns={"context": None}
)
# PostgreSQL, a group's first statement (``DatabaseDispatcher.run_grouped``): the questions its answers go to,
# locked in id order without waiting (a question another transaction holds is left to an answer of its own
# after the group), with their images (the group answers them in image order: see ``_run_group_postgres``).
LOCK_GROUP_POSTGRES = Statement(
    "SELECT id, image_id FROM task WHERE id = ANY(:tasks) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
    columns={"id": None, "image_id": None},
)
# PostgreSQL, a group's second statement: what ANSWERING_POSTGRES reads, for each answer of the group at once.
ANSWERING_GROUP_POSTGRES = Statement(
    "SELECT u.task, u.worker, u.client, crowdpatch_answering(u.task, u.worker, u.client, u.lock_worker) AS context"
    " FROM unnest(CAST(:tasks AS integer[]), CAST(:workers AS integer[]), CAST(:clients AS text[]),"
    " CAST(:lock_workers AS boolean[])) WITH ORDINALITY AS u(task, worker, client, lock_worker, n) ORDER BY u.n",
    columns={"task": None, "worker": None, "client": None, "context": None},
)
_ANSWER_COLUMNS = (
    "task_id, worker_id, value, client_id, shown_at, answered_at, client_ms, seconds, time_source, worker_session"
)
# PostgreSQL: everything an answer writes, in one statement, under the question's lock (and the worker's
# row, which only this answer's transaction writes). The sub-statements share one snapshot, so the lease
# count leaves out the lease deleted beside it. It returns what leasing the worker's next question needs
# (its held leases, the answered one among them, and whether any lease expired): one statement less there.
_STORE_CTES = (
    f"WITH stored AS (INSERT INTO answer ({_ANSWER_COLUMNS}) VALUES"
    f" ({', '.join(':' + name for name in _ANSWER_COLUMNS.split(', '))}) RETURNING id),"
    " released AS (DELETE FROM lease WHERE id = :lease),"
    f" judged AS (UPDATE worker SET {_ANSWERED_BY} WHERE id = :worker_id),"
    " counted AS (UPDATE task SET answers_count = :answers, answers_disagree = :disagree,"
    " leases_count = (SELECT count(*) FROM lease WHERE task_id = :task_id AND id <> :lease) WHERE id = :task_id)"
)
_STORE_PARAMS = {"value": AnswerRow.__table__.c.value.type, "attributes": WorkerRow.__table__.c.attributes.type}
_STORE_COLUMNS = {"id": None, "held": None, "expired": Boolean()}
_NOT_ANSWERED = " AND l.id <> :lease"
"""The lease an answer's write deletes, left out of the held leases it returns (its snapshot still shows it)."""
STORE_POSTGRES = Statement(
    f"{_STORE_CTES} SELECT stored.id, {_next_facts('lease', _NOT_ANSWERED)} FROM stored",
    params=_STORE_PARAMS,
    columns=_STORE_COLUMNS,
)
SET_WANTED = Statement("UPDATE task SET votes_wanted = :wanted WHERE id = :task")
SET_COUNTERS = Statement(
    "UPDATE task SET answers_count = :answers, leases_count = :leases, answers_disagree = :disagree WHERE id = :task"
)
SWEEP = Statement(
    "DELETE FROM lease WHERE expires_at <= :before AND task_id IN"
    f" (SELECT id FROM task WHERE project_id = :project AND (state <> 'open' OR kind = '{GOLD}'))"
)
# SQLite's write lock from a transaction's first statement on, so what is read is what is written over;
# savepoints need the transaction begun (pysqlite would begin it only at the first write).
BEGIN_IMMEDIATE = Statement("BEGIN IMMEDIATE")
SAVEPOINT = Statement("SAVEPOINT grouped_call")
ROLLBACK_TO_SAVEPOINT = Statement("ROLLBACK TO grouped_call")
RELEASE_SAVEPOINT = Statement("RELEASE grouped_call")
# PostgreSQL: before the locking picks of a hand-out that may wait, so that a question it passes over is
# unlocked again (a rollback to a savepoint releases the row locks taken since); left to the commit otherwise.
PICK_SAVEPOINT = Statement("SAVEPOINT pick")
ROLLBACK_TO_PICK = Statement("ROLLBACK TO pick")


@dataclass(frozen=True)
class HandOut:
    """The hand-out queries of one mode, for one counting rule and backend."""

    pick: tuple[Statement, ...]
    """The first open question in priority order with a free slot for the worker; on PostgreSQL a
    locking variant that skips rows locked by others, then one that waits for them."""
    reclaim: tuple[Statement, ...]
    """The same over the questions of expired leases (their slot handed to this worker)."""
    recheck: Statement | None
    """PostgreSQL: a locked pick's state, free slot and whether the worker has seen it, re-read under the lock."""
    lease_first: Statement | None = None
    """PostgreSQL: the skipping pick on an image no other server process's workers hold, leased and counted in
    the same statement (see :func:`hand_out`)."""
    store_and_lease: Statement | None = None
    """PostgreSQL: ``STORE_POSTGRES`` and ``lease_first`` in one statement, the pick tried only when the
    worker holds no other live lease and no lease has expired (its ``tried`` column)."""


def _pick(kinds: str, wanted: str, also: str) -> str:
    """The first open question in queue order with a free slot the worker has not seen (and ``also``)."""
    return (
        f"SELECT {_TASK_FIELDS} FROM task t WHERE t.project_id = :project AND t.state = 'open'"
        f" AND t.kind IN {kinds} AND t.answers_count + t.leases_count < {wanted} AND {_UNSEEN}"
        f"{also} ORDER BY t.priority, t.level, t.id LIMIT 1"
    )


def _lease_picked(pick: str) -> str:
    """CTEs that lock ``pick``'s row (``SKIP LOCKED``: never waiting), lease it to ``:worker`` and count the lease."""
    return (
        f"picked AS ({pick} FOR UPDATE OF t SKIP LOCKED),"
        " leased AS (INSERT INTO lease (task_id, worker_id, expires_at, leased_at, server, image_id)"
        " SELECT id, :worker, :expires, :now, :server, image_id FROM picked ON CONFLICT (task_id, worker_id) DO NOTHING"
        " RETURNING task_id),"
        # Counted up, not recounted: the statement's snapshot may predate a lease committed while it ran,
        # which the row's own count (an UPDATE reads the newest version, under the pick's lock) holds.
        " lease_counted AS (UPDATE task SET leases_count = leases_count + 1 WHERE id IN (SELECT task_id FROM leased))"
    )


# No other live lease of the worker's (a question it holds is handed back before a new one) and no
# expired lease anywhere (expired slots are handed on first): what the hand-out after an answer needs
# for its usual case, a fresh pick. Stricter than the dispatcher's own test (a held lease on a closed
# question counts here), which is safe: the dispatcher reads whether the pick was tried.
# Read from ``mine``, the worker's live leases (the answered one among them: the statement's snapshot shows it).
_FRESH_PICK = f"NOT EXISTS (SELECT 1 FROM mine l WHERE l.id <> :lease) AND NOT {_ANY_EXPIRED}"


_NOT_BUSY = " AND t.id <> ALL(CAST(:busy AS integer[]))"
"""None of the questions the transaction's group answers (``:busy``, empty outside a group): one of them may
close before the group commits, and a worker would be shown a question gone before its answer."""
_NOT_ELSEWHERE = (
    " AND NOT EXISTS (SELECT 1 FROM lease o WHERE o.image_id = t.image_id AND o.server <> :server"
    " AND o.expires_at > :now)"
)
"""No image another server process's workers hold a live lease in (``:server``: this process's number).
Two processes answering one image's questions meet on its locks: an answer's question locked by the other
process's group runs alone after its own group, and decisions on the image wait for each other's commits
(docs/benchmarks.md, "Each process on its own images"). Only the usual hand-out passes them over: when it
finds nothing, the dispatcher's next picks take any question (an image is never left to one process)."""


def hand_out(mode: str, early_stop: bool, backend: Backend) -> HandOut:
    """The hand-out queries of ``mode`` for a counting rule and backend.

    On PostgreSQL the usual hand-out is one statement (``lease_first``): the pick locks its row
    with ``SKIP LOCKED``, so it never waits, and a row that changed since the statement's snapshot
    is re-read by the lock itself (its state and counts re-tested on the newest version); what is
    only a statement old is whether this worker has seen it, which the unique (question, worker) keys
    of leases and answers guard (a lease the worker already holds is not inserted twice). It passes
    over images another server process's workers hold (``_NOT_ELSEWHERE``). When it finds nothing,
    the picks of any image (skipping, then waiting), their re-check in a statement of its own, and the
    expired slots (``reclaim``) are the caller's, in the order :meth:`.DatabaseDispatcher._lease_open` gives.
    """
    kinds = sql_list(MODE_KINDS[mode])
    wanted = wanted_sql(early_stop)
    postgres = backend == "postgresql"
    skip = " AND t.id <> ALL(:skipped)" if postgres else ""
    pick = _pick(kinds, wanted, skip)
    # The few expired leases (ix_lease_expires_at) are read first, then their questions: walking the open
    # questions in queue order to find (nearly always) none cost far more per request.
    reclaim = (
        "WITH expired AS MATERIALIZED (SELECT id, task_id FROM lease WHERE expires_at <= :now AND worker_id <> :worker)"
        f" SELECT l.id AS lease_id, {_TASK_FIELDS} FROM expired l CROSS JOIN task t"
        f" WHERE t.id = l.task_id AND t.project_id = :project AND t.state = 'open'"
        f" AND t.kind IN {kinds} AND t.answers_count + t.leases_count - 1 < {wanted} AND {_UNSEEN}"
        f"{skip} ORDER BY t.priority, t.level, t.id LIMIT 1"
    )
    reclaim_columns = {"lease_id": None, **TASK_COLUMNS}
    if not postgres:
        return HandOut((Statement(pick, columns=TASK_COLUMNS),), (Statement(reclaim, columns=reclaim_columns),), None)
    recheck = Statement(
        f"SELECT t.state, t.answers_count + t.leases_count < {wanted} AS free,"
        " EXISTS (SELECT 1 FROM answer a WHERE a.task_id = t.id AND a.worker_id = :worker)"
        " OR EXISTS (SELECT 1 FROM lease s WHERE s.task_id = t.id AND s.worker_id = :worker) AS seen"
        " FROM task t WHERE t.id = :task",
        columns={"state": None, "free": Boolean(), "seen": Boolean()},
    )
    lease_first = Statement(
        f"WITH {_lease_picked(_pick(kinds, wanted, _NOT_BUSY + _NOT_ELSEWHERE))}"
        " SELECT picked.*, EXISTS (SELECT 1 FROM leased) AS leased FROM picked",
        columns={**TASK_COLUMNS, "leased": Boolean()},
    )
    # The answered lease is still in the statement's snapshot, so the pick cannot be the answered question.
    store_and_lease = Statement(
        f"{_STORE_CTES}, mine AS MATERIALIZED (SELECT l.* FROM lease l WHERE {_LIVE}),"
        f" {_lease_picked(_pick(kinds, wanted, _NOT_BUSY + _NOT_ELSEWHERE + ' AND ' + _FRESH_PICK))}"
        f" SELECT stored.id, {_next_facts('mine', _NOT_ANSWERED)}, {_FRESH_PICK} AS tried,"
        " EXISTS (SELECT 1 FROM leased) AS leased,"
        f" {', '.join(f'p.{name} AS next_{name}' for name in TASK_COLUMNS)}"
        " FROM stored LEFT JOIN picked p ON true",
        params=_STORE_PARAMS,
        columns={
            **_STORE_COLUMNS,
            "tried": Boolean(),
            "leased": Boolean(),
            **{f"next_{name}": type_ for name, type_ in TASK_COLUMNS.items()},
        },
    )
    return HandOut(
        (
            Statement(pick + " FOR UPDATE OF t SKIP LOCKED", columns=TASK_COLUMNS),
            Statement(pick + " FOR UPDATE OF t", columns=TASK_COLUMNS),
        ),
        (
            Statement(reclaim + " FOR UPDATE OF t SKIP LOCKED", columns=reclaim_columns),
            Statement(reclaim + " FOR UPDATE OF t", columns=reclaim_columns),
        ),
        recheck,
        lease_first,
        store_and_lease,
    )
