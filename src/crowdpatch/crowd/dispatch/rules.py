"""The rules every dispatcher enforces, written once: what a worker is handed, which answers are taken, replays.

Two dispatchers lease questions and store answers: the simulator's (:mod:`.memory`, the open
questions kept in memory) and the server's (:mod:`.database`, any number of processes on one store).
They keep leases differently; the rules they enforce are these:

* **Validation**: an answer has the form of its question's kind (:func:`validate_answer`).
* **Leases and late answers**: a worker answers what it was leased. A lease that expired keeps its
  slot until the question is handed to another worker; a late answer is honest work the requester
  pays for anyway, taken while nobody took its place and the question still wants it
  (:func:`late_answer_accepted`). Gold wants every worker's answer.
* **Replays**: the same ``client_id`` again is the answer already stored, never a second one; under
  another worker or question it is refused (:func:`check_replay`).
* **What is handed out**: :func:`assignment`, the same for every kind and dispatcher.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crowdpatch.boxes import Box
from crowdpatch.crowd.kinds import GOLD, KINDS, NO, NOT_HERE, YES
from crowdpatch.crowd.votes import votes_target

if TYPE_CHECKING:
    from crowdpatch.config import ProjectConfig


class AnswerRejected(ValueError):
    """An answer that cannot be accepted: a malformed value (the server's 422)."""


class NotLeased(AnswerRejected):
    """The task is not (or no longer) this worker's to answer (the server's 409)."""


class TooManyHeld(RuntimeError):
    """The worker holds as many unanswered questions as it may."""


class WorkerStopped(RuntimeError):
    """The worker fell below the quality bar and gets no more questions."""


class SessionComplete(RuntimeError):
    """The worker has given the answers its session asks for."""


REFUSALS = (AnswerRejected, TooManyHeld, WorkerStopped, SessionComplete)
"""What a dispatcher raises to refuse a request (a 4xx, or 204); it changes nothing in the store."""

MAX_HELD = 4
"""Live unanswered leases one worker may hold: on screen, prefetched, answers in flight (and one taken back)."""


def check_session_open(finished: bool, given: int, max_answers: int | None) -> None:
    """A worker answers (or is handed a question) only while its session is open: :class:`SessionComplete` otherwise.

    ``finished``: the session was completed (its code given out), after which nothing it answers or takes
    back would be paid for or seen; ``max_answers``: the answers a session gives (None: no limit).
    """
    if finished:
        raise SessionComplete("this session is finished: it takes no more answers")
    if max_answers is not None and given >= max_answers:
        raise SessionComplete(f"this session's {max_answers} answers are given: it takes no more")


def quota_leaves_room(given: int, held: int, max_answers: int | None) -> bool:
    """Whether a worker that has given ``given`` answers and holds ``held`` unanswered questions may be handed another.

    Never more than its session has answers left to give: a question leased past the quota could not
    be answered, and would keep its slot from other workers until its lease expired.
    """
    return max_answers is None or given + held < max_answers


@dataclass(frozen=True)
class Assignment:
    """A question leased to one worker. Gold questions are presented as ordinary patches."""

    task_id: int
    kind: str
    """The kind the worker is shown (verify | patch | grid | polygon | extreme | pick | correct)."""
    image_id: int
    box: Box
    grid_size: int | None
    question: str
    lease_expires_at: float
    variant: str | None = None
    """"outline" for an outline check (shown as a verification): how the answer is to be judged."""
    active_cells: tuple[int, ...] | None = None
    """A boundary round: the only grid cells shown clickable (the others are decided)."""
    choices: int | None = None
    """A pick: how many outlines it shows (its answer is one of them, or none)."""
    image_size: tuple[int, int] | None = None
    """The image's (width, height), where the hand-out read it with the question (None: the server looks it up)."""


@dataclass(frozen=True)
class StoredAnswer:
    """What storing one answer did."""

    answer_id: int
    task_id: int
    duplicate: bool
    """The same client id was stored before: this is that answer, and nothing new was stored."""
    task_done: bool
    worker_stopped: bool
    created_tasks: int = 0
    """Questions the answer's decision created."""
    answers_given: int | None = None
    """The worker's answers so far, this one included (the server counts them; the simulator has no sessions)."""


@dataclass(frozen=True)
class NewAnswer:
    """An answer as a worker's client sends it."""

    worker_id: int
    task_id: int
    value: Any
    client_id: str
    """Chosen by the client, once per answer: sent again (a retry), it is the same answer."""
    client_ms: int | None = None
    """How long the client measured the worker took."""
    seconds: float | None = None
    """How long the worker took, where the caller knows it (the simulator's modeled times)."""
    time_source: str = "measured"
    """"measured" (a person's clock) or "modeled" (a simulated worker's)."""
    worker_session: str | None = None
    """The key of the server session it came through (undo takes back only that session's answers)."""


class Dispatcher(ABC):
    """Leases questions to workers and stores their answers, by this module's rules."""

    config: ProjectConfig

    def lease_expiry(self, now: float) -> float:
        """When a lease handed out at ``now`` expires: the project's lease period later."""
        return now + self.config.crowd.lease_seconds

    def submit(
        self, worker_id: int, task_id: int, value: Any, *, client_id: str, client_ms: int | None = None,
        seconds: float | None = None, time_source: str = "measured"
    ) -> StoredAnswer:  # fmt: skip
        """Store one answer and everything it decides, in one transaction (acknowledged once committed).

        The same ``client_id`` again returns the stored answer (``duplicate``) and stores nothing.
        ``seconds``: the answer's duration where the caller knows it; else what the client measured
        (``client_ms``), else the time since the question was handed out (:func:`answer_seconds`).
        """
        return self.store(NewAnswer(worker_id, task_id, value, client_id, client_ms, seconds, time_source))

    @abstractmethod
    def store(self, answer: NewAnswer) -> StoredAnswer:
        """:meth:`submit`, for an answer already gathered."""


def answer_row(answer: NewAnswer, value: Any, shown_at: float, answered_at: float, seconds: float) -> dict[str, Any]:
    """The columns an answer is stored with (the ``answer`` table's), ``value`` validated."""
    return {
        "task_id": answer.task_id, "worker_id": answer.worker_id, "value": value, "client_id": answer.client_id,
        "shown_at": shown_at, "answered_at": answered_at, "client_ms": answer.client_ms, "seconds": seconds,
        "time_source": answer.time_source, "worker_session": answer.worker_session,
    }  # fmt: skip


def assignment(
    kind: str,
    task_id: int,
    image_id: int,
    box: list[int] | Box,
    grid_size: int | None,
    spec: dict[str, Any] | None,
    target: str,
    lease_expires_at: float,
    image_size: tuple[int, int] | None = None,
) -> Assignment:
    """A question of stored kind ``kind`` as the worker is handed it."""
    active = (spec or {}).get("active")
    return Assignment(
        task_id=task_id,
        kind=KINDS[kind].shown,
        image_id=image_id,
        box=box if isinstance(box, Box) else Box.from_list(box),
        grid_size=grid_size,
        question=KINDS[kind].question.format(target=target),
        lease_expires_at=lease_expires_at,
        variant=KINDS[kind].variant,
        active_cells=tuple(active) if active is not None else None,
        choices=choice_count(kind, spec),
        image_size=image_size,
    )


def choice_count(kind: str, spec: dict[str, Any] | None) -> int | None:
    """How many outlines a question of stored kind ``kind`` offers: its candidates for a pick, None otherwise."""
    if KINDS[kind].form != "choice":
        return None
    return len((spec or {}).get("candidates") or [])


SIZED_FORMS = ("polygon", "points", "clicks")
"""The answer forms made of points on the image: validating them needs the image's size."""


def needs_image_size(kind: str) -> bool:
    """Whether an answer to a question of stored kind ``kind`` is checked against its image's size.

    Dispatchers read the size only then, so the answers that make up most of the traffic (yes/no,
    grid cells) cost no extra lookup.
    """
    return KINDS[kind].form in SIZED_FORMS


def validate_answer(
    kind: str,
    value: Any,
    grid_size: int | None = None,
    active: list[int] | None = None,
    image_size: tuple[int, int] | None = None,
    choices: int | None = None,
) -> Any:
    """The answer in its stored form, or :class:`AnswerRejected` saying what is wrong with it.

    ``active``: the cells a boundary round shows clickable; ``image_size`` (width, height): where a
    polygon's, an extreme answer's or a correction's points must lie (:func:`needs_image_size`);
    ``choices``: how many outlines a pick offers (:func:`choice_count`). Both dispatchers pass both,
    so the simulator and the server take the same answers. Extreme points and clicks are checked
    against the image only where its size is given, a pick's choice against the outlines only where
    their number is.
    """
    form = KINDS[kind].form
    if form == "polygon":
        width, height = image_size or (0, 0)
        return validate_polygon(value, width, height)
    if form == "points":
        return validate_extreme(value, image_size)
    if form == "choice":
        return validate_choice(value, choices)
    if form == "clicks":
        return validate_clicks(value, image_size)
    if form == "grid":
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


EXTREME_POINTS = 4
"""An extreme answer's points: the target's top, bottom, left and right ends, in the order clicked."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_extreme(value: Any, image_size: tuple[int, int] | None) -> dict[str, Any]:
    """``{"points": [[x, y] x 4]}`` in image pixels (rounded to 0.01 px), or ``{"not_here": true}``."""
    if isinstance(value, dict) and set(value) == {NOT_HERE} and value[NOT_HERE] is True:
        return {NOT_HERE: True}
    points = value.get("points") if isinstance(value, dict) and set(value) == {"points"} else None
    if not isinstance(points, list):
        raise AnswerRejected('an extreme answer is {"points": [[x, y], [x, y], [x, y], [x, y]]} or {"not_here": true}')
    if len(points) != EXTREME_POINTS:
        raise AnswerRejected(
            f"an extreme answer has exactly {EXTREME_POINTS} points (top, bottom, left, right), got {len(points)}"
        )
    return {"points": _points_on_image(points, image_size, "extreme point")}


MAX_CLICKS = 10
"""Most clicks one correction answer may hold: an outline wrong in more places than this wants a new pick."""


def validate_clicks(value: Any, image_size: tuple[int, int] | None) -> dict[str, list[list[float]]]:
    """``{"clicks": [[x, y], ...]}`` on an outline's errors, in image pixels; none: the outline fits."""
    clicks = value.get("clicks") if isinstance(value, dict) and set(value) == {"clicks"} else None
    if not isinstance(clicks, list):
        raise AnswerRejected(
            'a correction answer is {"clicks": [[x, y], ...]}, or {"clicks": []} when the outline fits'
        )
    if len(clicks) > MAX_CLICKS:
        raise AnswerRejected(f"a correction answer has at most {MAX_CLICKS} clicks, got {len(clicks)}")
    return {"clicks": _points_on_image(clicks, image_size, "click")}


def _points_on_image(points: list[Any], image_size: tuple[int, int] | None, what: str) -> list[list[float]]:
    """Each point as [x, y] inside the image (where its size is known), rounded to 0.01 px."""
    clean = []
    for point in points:
        if not (isinstance(point, list) and len(point) == 2 and all(_number(v) for v in point)):
            raise AnswerRejected(f"every {what} is [x, y], two finite numbers")
        x, y = float(point[0]), float(point[1])
        width, height = image_size or (math.inf, math.inf)
        if not (0 <= x <= width and 0 <= y <= height):
            where = f"the {width} x {height} image" if image_size else "the image"
            raise AnswerRejected(f"{what} [{x:g}, {y:g}] is outside {where}: click on the photo")
        clean.append([round(x, 2), round(y, 2)])
    return clean


def validate_choice(value: Any, choices: int | None) -> dict[str, int | None]:
    """``{"choice": k}``, one of the ``choices`` outlines shown, or ``{"choice": null}``: none of them fits."""
    if not (isinstance(value, dict) and set(value) == {"choice"}):
        raise AnswerRejected('a pick answer is {"choice": k} (k counts from 0) or {"choice": null} (none fits)')
    choice = value["choice"]
    if choice is None:
        return {"choice": None}
    if not isinstance(choice, int) or isinstance(choice, bool) or choice < 0:
        raise AnswerRejected(f"a pick's choice is a whole number from 0, or null; got {choice!r}")
    if choices is not None and choice >= choices:
        raise AnswerRejected(f"choice {choice} is not one of the {choices} outlines shown (0 to {choices - 1})")
    return {"choice": choice}


MIN_POLYGON_AREA = 1.0
"""Least area (square image pixels) a polygon answer encloses: less is points on one line, or one point."""


def validate_polygon(value: Any, width: int, height: int) -> dict[str, list[list[float]]]:
    """``{"polygon": [[x, y], ...]}``: 3 or more points inside the image (rounded to 0.01 px) enclosing an area."""
    points = value.get("polygon") if isinstance(value, dict) else None
    if not isinstance(points, list) or len(points) < 3:
        raise AnswerRejected('a polygon answer is {"polygon": [[x, y], ...]} with at least 3 points')
    clean = []
    for point in points:
        if not (isinstance(point, list) and len(point) == 2 and all(_number(v) for v in point)):
            raise AnswerRejected("every polygon point is [x, y], two finite numbers")
        x, y = float(point[0]), float(point[1])
        if not (0 <= x <= width and 0 <= y <= height):
            raise AnswerRejected(f"polygon point {point} outside the {width} x {height} image")
        clean.append([round(x, 2), round(y, 2)])
    area = polygon_area(clean)
    if area < MIN_POLYGON_AREA:
        raise AnswerRejected(
            f"a polygon encloses at least {MIN_POLYGON_AREA:g} square pixel, this one {area:g}: its points are all"
            " the same, or on one line; draw around the object"
        )
    return {"polygon": clean}


def polygon_area(points: list[list[float]]) -> float:
    """The area a closed polygon encloses, in square pixels (the shoelace formula; a figure eight's loops cancel)."""
    twice = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))
    return abs(twice) / 2


def not_leased(task_id: int) -> NotLeased:
    return NotLeased(f"task {task_id} is not leased to you (or your lease expired and went to someone else)")


def late_answer_accepted(
    kind: str, slot_taken: bool, counted: Callable[[], list[Any]], votes_wanted: int, early_stop: bool
) -> bool:
    """Whether the answer of a worker whose lease expired is taken.

    ``slot_taken``: the question was handed to another worker in its place; ``counted``: the values
    that count toward the question so far (read only when needed). Refused too when the question no
    longer wants it (its wants shrank: a stopped worker's answers stopped counting).
    """
    if kind == GOLD:
        return True
    if slot_taken:
        return False
    values = counted()
    return len(values) < votes_target(values, votes_wanted, early_stop)


def late_refusal(task_id: int) -> NotLeased:
    return NotLeased(f"your lease on task {task_id} expired and others answered it")


def check_replay(client_id: str, stored_worker: int, stored_task: int, worker_id: int, task_id: int) -> None:
    """An answer already stored under ``client_id`` is a retry only from the same worker, for the same question."""
    if stored_worker != worker_id or stored_task != task_id:
        raise NotLeased(f"client id {client_id!r} was used for another answer")


def answer_seconds(client_ms: int | None, shown_at: float, answered_at: float) -> float:
    """How long the worker took: what its client measured, else the time since the question was handed out."""
    return client_ms / 1000.0 if client_ms is not None and client_ms > 0 else answered_at - shown_at
