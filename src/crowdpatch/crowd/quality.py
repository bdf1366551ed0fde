"""Live quality control: what one answer says about its worker, and when the worker is stopped.

Shared by both dispatchers (the simulator's and the server's), so simulated and real workers are
judged by the same rules. Three rules stop a worker (``WorkerRow.stopped_reason``):

- ``gold``: fails known-answer questions (Wald's sequential test, :func:`is_spammer`), among them
  the check an answer carries in itself (extreme points out of order, :mod:`.answer_checks`);
- ``too_fast``: answers faster than anyone can read the question, too often;
- ``constant``: keeps giving the same answer (always "no", always every cell, ...) while the
  other workers' answers on those same questions differ (:func:`constant_run_refuted`).

An answer taken back (undo) is taken out of the counters by :func:`undo_answer_quality`, the exact
inverse of :func:`record_answer_quality`; a worker's quality estimate is :func:`gold_quality` in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from crowdpatch.config import CrowdConfig
from crowdpatch.crowd.answer_checks import passes_own_check
from crowdpatch.crowd.kinds import GOLD, GRID_KINDS, YES_NO_KINDS
from crowdpatch.store.models import AnswerRow, TaskRow, WorkerRow

_STATE_KEY = "quality"
"""Key of the quality-control counters in ``WorkerRow.attributes`` (a JSON column; no migration needed)."""


def is_spammer(correct: int, seen: int, crowd: CrowdConfig, miss_rate: float = 0.1) -> bool:
    """Wald's sequential probability ratio test on gold answers: spammer accuracy vs honest accuracy.

    A fixed "accuracy below X after N golds" rule bans many honest workers on an early unlucky
    streak; the SPRT bans only when the evidence reaches the odds set by ``false_ban_rate``,
    after as few golds as the evidence allows.
    """
    spam, honest = crowd.spammer_gold_accuracy, crowd.honest_gold_accuracy
    wrong = seen - correct
    log_ratio = correct * math.log(spam / honest) + wrong * math.log((1 - spam) / (1 - honest))
    return log_ratio >= math.log((1 - miss_rate) / crowd.false_ban_rate)


@dataclass
class WorkerCounters:
    """The quality columns of one worker row, read and written by the database dispatcher's own statements.

    :func:`record_answer_quality` takes this or a ``WorkerRow`` alike (the same attribute names);
    loading the ORM row and flushing it cost more than the rest of storing an answer.
    """

    id: int
    attributes: dict[str, Any] | None
    gold_seen: int | None
    gold_correct: int | None
    too_fast: int | None
    quality: float | None
    banned: bool
    stopped_reason: str | None

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "attributes",
        "gold_seen",
        "gold_correct",
        "too_fast",
        "quality",
        "banned",
        "stopped_reason",
    )


@dataclass(frozen=True)
class GivenAnswer:
    """What quality control reads of one answer."""

    kind: str
    """The stored kind of its question."""
    value: Any
    seconds: float
    gold_answer: Any = None
    """The known answer, for a gold question."""


Worker = WorkerRow | WorkerCounters
"""A worker's quality columns: its ORM row, or the database dispatcher's lighter copy of them."""


def record_answer_quality(
    worker: Worker, answer: GivenAnswer, crowd: CrowdConfig, given: int | None = None, session: Session | None = None
) -> bool:
    """Update the worker's gold and speed counters; returns True when this answer gets it stopped.

    ``given`` is the worker's answer count, this one included; when left out (the simulator's
    dispatcher), the count kept in ``worker.attributes`` is used, so the too-fast rule judges
    simulated (modeled) times exactly as it judges measured ones. ``session`` reads the crowd's
    answers for the constant-answer rule (default: the ORM row's own session).
    """
    state = dict((worker.attributes or {}).get(_STATE_KEY) or {})
    state["answers"] = int(state.get("answers", 0)) + 1
    answers_so_far = state["answers"] if given is None else given
    run = _extend_run(state, answer.kind, answer.value)
    worker.attributes = {**(worker.attributes or {}), _STATE_KEY: state}
    if answer.seconds < crowd.min_seconds_per_answer:
        worker.too_fast = (worker.too_fast or 0) + 1
    passed = _passes(answer)
    if passed is not None:
        worker.gold_seen = (worker.gold_seen or 0) + 1
        worker.gold_correct = (worker.gold_correct or 0) + int(passed)
        worker.quality = gold_quality(worker.gold_correct, worker.gold_seen)
        if not worker.banned and is_spammer(worker.gold_correct, worker.gold_seen, crowd):
            worker.banned, worker.stopped_reason = True, "gold"
            return True
    if not worker.banned and answers_so_far is not None and answers_so_far >= crowd.too_fast_min_answers:
        if (worker.too_fast or 0) >= crowd.too_fast_stop_share * answers_so_far:
            worker.banned, worker.stopped_reason = True, "too_fast"
            return True
    if not worker.banned and run is not None:
        form, run_value, length = run
        needed = crowd.constant_run_grid_answers if form == "grid" else crowd.constant_run_answers
        session = session if session is not None else object_session(worker)
        # The crowd check reads at most three runs' worth of answers, so a long honest run stays cheap.
        window = min(length, 3 * needed)
        if (
            length >= needed
            and session is not None
            and constant_run_refuted(session, worker.id, form, run_value, window, crowd)
        ):
            worker.banned, worker.stopped_reason = True, "constant"
            return True
    return False


def gold_quality(correct: int, seen: int) -> float | None:
    """A worker's estimated accuracy from its gold answers (Laplace's rule of succession); None before any."""
    return (correct + 1) / (seen + 2) if seen else None


def undo_answer_quality(session: Session, worker: WorkerRow, answer: GivenAnswer, crowd: CrowdConfig) -> None:
    """Take an answer already deleted from the store out of its worker's counters: :func:`record_answer_quality` undone.

    Only a worker who is not stopped may take an answer back, so the ban it might have caused is not undone here.
    The run of identical answers is rebuilt from the worker's stored answers (the run it broke is not kept).
    """
    state = dict((worker.attributes or {}).get(_STATE_KEY) or {})
    state["answers"] = max(0, int(state.get("answers", 0)) - 1)
    form = _form(answer.kind)
    if form is not None:
        runs = dict(state.get("runs") or {})
        run = _stored_run(session, worker.id, form)
        if run is None:
            runs.pop(form, None)
        else:
            runs[form] = run
        state["runs"] = runs
    worker.attributes = {**(worker.attributes or {}), _STATE_KEY: state}
    if answer.seconds < crowd.min_seconds_per_answer:
        worker.too_fast = max(0, (worker.too_fast or 0) - 1)
    passed = _passes(answer)
    if passed is not None:
        worker.gold_seen = max(0, (worker.gold_seen or 0) - 1)
        worker.gold_correct = max(0, (worker.gold_correct or 0) - int(passed))
        worker.quality = gold_quality(worker.gold_correct, worker.gold_seen)


def _passes(answer: GivenAnswer) -> bool | None:
    """Whether an answer passes a known check (a gold question's answer, or the answer's own); None if none applies."""
    if answer.kind == GOLD:
        return answer.value == answer.gold_answer
    return passes_own_check(answer.kind, answer.value)


def _stored_run(session: Session, worker_id: int, form: str) -> dict[str, Any] | None:
    """The run state :func:`_extend_run` keeps, rebuilt from the worker's stored answers of this form."""
    kinds = GRID_KINDS if form == "grid" else YES_NO_KINDS
    with session.no_autoflush:
        answers = session.execute(
            select(AnswerRow.value, TaskRow.kind)
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(AnswerRow.worker_id == worker_id, TaskRow.kind.in_(kinds))
            .order_by(AnswerRow.id.desc())
        ).all()
    if not answers:
        return None
    keys = [answer_key(kind, value) for value, kind in answers]
    length = next((i for i, key in enumerate(keys) if key != keys[0]), len(keys))
    return {"value": keys[0], "length": length, "answers": len(keys)}


def answer_key(kind: str, value: Any) -> Any:
    """What makes two answers 'the same' for the constant rule: the yes/no, or the set of cells clicked."""
    if kind in GRID_KINDS:
        cells = value.get("cells", []) if isinstance(value, dict) else []
        return sorted(int(cell) for cell in cells)
    return value


def _extend_run(state: dict[str, Any], kind: str, value: Any) -> tuple[str, Any, int] | None:
    """Lengthen or restart the worker's run of identical answers of this form; None for gold and polygons.

    Yes/no and grid answers keep separate runs: in grid presentation a worker alternates between
    the two forms, and a spammer is constant within each.
    """
    form = _form(kind)
    if form is None:
        return None
    key = answer_key(kind, value)
    runs = dict(state.get("runs") or {})
    current = runs.get(form)
    length = current["length"] + 1 if current is not None and current["value"] == key else 1
    answers = (current or {}).get("answers", 0) + 1
    runs[form] = {"value": key, "length": length, "answers": answers}
    state["runs"] = runs
    return form, key, length


def _form(kind: str) -> str | None:
    """The form whose run an answer of this kind extends: "grid", "yes_no", or None (gold, polygons)."""
    if kind in GRID_KINDS:
        return "grid"
    if kind in YES_NO_KINDS:
        return "yes_no"
    return None


def constant_run_refuted(
    session: Session, worker_id: int, form: str, run_value: Any, length: int, crowd: CrowdConfig
) -> bool:
    """Whether the crowd contradicts the worker's last ``length`` answers of this form, all ``run_value``.

    A run alone is weak evidence: an honest worker shown a stretch of background windows says
    "no" many times in a row. What a constant spammer cannot fake is agreement where the
    questions differ, so the run counts only when the other (not stopped) workers' answers on
    the same questions differ from it often enough. Only the run's stored answers are read; the
    query runs only while a run is long enough to matter, not on every answer.
    """
    kinds = GRID_KINDS if form == "grid" else YES_NO_KINDS
    with session.no_autoflush:
        # The dispatcher may hold the current answer unflushed; flushing here would move its
        # duplicate-answer error out of the dispatcher's own handler. The earlier answers suffice.
        recent = session.execute(
            select(AnswerRow.task_id, AnswerRow.value, TaskRow.kind)
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(AnswerRow.worker_id == worker_id, TaskRow.kind.in_(kinds))
            .order_by(AnswerRow.id.desc())
            .limit(length)
        ).all()
        tasks = [task_id for task_id, value, kind in recent if answer_key(kind, value) == run_value]
        if not tasks:
            return False
        others = session.execute(
            select(AnswerRow.task_id, AnswerRow.value, TaskRow.kind, WorkerRow.attributes)
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(AnswerRow.task_id.in_(tasks), AnswerRow.worker_id != worker_id, WorkerRow.banned.is_(False))
        ).all()
    needed = crowd.constant_run_grid_answers if form == "grid" else crowd.constant_run_answers
    return crowd_contradicts(
        [
            (task_id, answer_key(kind, value))
            for task_id, value, kind, attributes in others
            # A worker who never gave any other answer is no witness: constant spammers would
            # vouch for each other. Excluding everyone in a long run instead would drop the
            # honest workers who agree (they are in the same run) and keep those who do not.
            if not _never_varied(attributes, form, needed)
        ],
        run_value,
        crowd,
    )


def _never_varied(attributes: dict[str, Any] | None, form: str, needed: int) -> bool:
    run = (((attributes or {}).get(_STATE_KEY) or {}).get("runs") or {}).get(form)
    return run is not None and run["length"] >= needed and run["length"] == run.get("answers", 0)


def crowd_contradicts(others: list[tuple[int, Any]], run_value: Any, crowd: CrowdConfig) -> bool:
    """Whether the other workers' (task, answer) pairs say the run's questions differ from ``run_value``.

    Each question counts once, by the majority of its other answers (a tie counts half): a
    spammer not yet stopped, answering beside an honest worker, then sways one question at most,
    not the whole measure. Needs ``constant_min_crowd_answers`` questions answered by others.
    """
    per_task: dict[int, list[bool]] = {}
    for task_id, key in others:
        per_task.setdefault(task_id, []).append(key != run_value)
    if len(per_task) < crowd.constant_min_crowd_answers:
        return False
    contradicted = 0.0
    for differs in per_task.values():
        share = sum(differs) / len(differs)
        contradicted += 1.0 if share > 0.5 else 0.5 if share == 0.5 else 0.0
    return contradicted / len(per_task) >= crowd.constant_min_disagreement
