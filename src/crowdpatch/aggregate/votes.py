"""Votes -> per-question posteriors: crowd-kit's aggregators; Dawid-Skene vectorized (:mod:`.dawid_skene`).

Aggregation is per window (or per grid cell), never per pixel: a worker who never saw a window did
not vote on it. One grid screen is one vote on each of its cells: a cell left unclicked is a "no". The adaptive
policy's grids are read on a finer lattice: a coarse first look votes on every fine cell under
each of its cells, a boundary round only on the cells it showed, a single-cell follow-up on its cell;
all of them are items of the region's first grid.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np
import pandas as pd
from sqlalchemy import String, case, cast, select
from sqlalchemy.orm import Session

from crowdpatch.aggregate.dawid_skene import BinaryDawidSkene
from crowdpatch.crowd.kinds import CELL, GRID, PATCH
from crowdpatch.patches.lattice import coarse_parents
from crowdpatch.registry import Registry
from crowdpatch.store.models import AnswerRow, TaskRow, WorkerRow

if TYPE_CHECKING:  # crowd-kit (with scikit-learn and SciPy's statistics) loads when an aggregator is first built
    from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote

Method = Literal["ds", "mv", "glad"]


AGGREGATORS: Registry[Callable[[], Any]] = Registry("aggregation method")
"""crowd-kit aggregators by method name (``[aggregation] method``), each built fresh per use."""


DS_ITERATIONS, DS_TOLERANCE = 100, 1e-5
"""Dawid-Skene's EM: at most this many iterations, stopping when the lower bound per vote gains less."""


@AGGREGATORS.register("ds")
def dawid_skene() -> BinaryDawidSkene:
    """crowd-kit's Dawid-Skene, vectorized for yes/no votes (:mod:`.dawid_skene`: the same numbers, 25x faster
    on millions of votes); ``crowdkit_dawid_skene`` is the reference it is tested against."""
    return BinaryDawidSkene(n_iter=DS_ITERATIONS, tol=DS_TOLERANCE)


def crowdkit_dawid_skene() -> DawidSkene:
    """crowd-kit's own Dawid-Skene with the same settings: the reference for :class:`BinaryDawidSkene`."""
    from crowdkit.aggregation import DawidSkene

    return DawidSkene(n_iter=DS_ITERATIONS, tol=DS_TOLERANCE)


@AGGREGATORS.register("mv")
def majority_vote() -> MajorityVote:
    from crowdkit.aggregation import MajorityVote

    return MajorityVote()


@AGGREGATORS.register("glad")
def glad() -> GLAD:
    from crowdkit.aggregation import GLAD

    return GLAD(n_iter=100, tol=1e-5, silent=True)


def make_aggregator(method: Method) -> Any:
    """The crowd-kit aggregator behind a method name."""
    return AGGREGATORS.get(method)()


def grid_votes(value: dict, size: int, spec: dict | None) -> list[tuple[int, bool]]:
    """One grid answer as (fine cell, clicked) votes: a coarse screen votes on every fine cell under each of its cells;
    a boundary round votes only on its active cells."""
    clicked = set(value.get("cells", []))
    resolution = int((spec or {}).get("resolution") or size)
    active = (spec or {}).get("active")
    if active is not None:
        return [(cell, cell in clicked) for cell in active]
    if resolution == size:
        return [(cell, cell in clicked) for cell in range(size * size)]
    return [(cell, parent in clicked) for cell, parent in enumerate(coarse_parents(resolution, size))]


VOTE_COLUMNS = ["task", "worker", "label"]

YES_JSON = '"yes"'
"""A yes/no answer as its stored JSON text: compared in SQL, so that millions of answers are not decoded one by one."""

CHUNK = 200_000
"""Window answers fetched and turned into votes at a time: memory stays bounded on a study of millions."""


def _answers(project_id: int, kinds: tuple[str, ...], drop_banned: bool, *columns: Any) -> Any:
    """The project's answers to questions of ``kinds`` (by workers not banned, unless asked), as ``columns``."""
    query = (
        select(*columns)
        .join(TaskRow, TaskRow.id == AnswerRow.task_id)
        .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
        .where(TaskRow.project_id == project_id, TaskRow.kind.in_(kinds))
    )
    return query.where(WorkerRow.banned.is_(False)) if drop_banned else query


def _frame(task: pd.Series, worker: pd.Series, label: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {"task": task.astype("str"), "worker": worker.astype("str"), "label": np.asarray(label, np.int64)}
    )


def _window_votes(session: Session, project_id: int, drop_banned: bool) -> list[pd.DataFrame]:
    """Votes of window answers: one per answer, keyed by the window's id; the bulk of a study's votes.

    Three integer columns, read from the database's cursor in chunks and converted by numpy: a
    study's millions of answers are not turned into Python objects one by one (about 1.5 us per
    answer instead of 10; docs/benchmarks.md, "Aggregation at scale")."""
    yes = case((cast(AnswerRow.value, String) == YES_JSON, 1), else_=0)
    query = _answers(project_id, (PATCH,), drop_banned, AnswerRow.task_id, AnswerRow.worker_id, yes)
    result = session.connection().execute(query)
    frames = []
    try:
        # The DBAPI cursor itself: the columns are plain integers, nothing for SQLAlchemy to convert.
        while rows := result.cursor.fetchmany(CHUNK):
            columns = np.array(rows, dtype=np.int64)
            frames.append(_frame(pd.Series(columns[:, 0]), pd.Series(columns[:, 1]), columns[:, 2]))
    finally:
        result.close()
    return frames


def _cell_votes(session: Session, project_id: int, drop_banned: bool) -> pd.DataFrame:
    """Votes of single-cell follow-ups: each one more vote on its grid's cell."""
    yes = case((cast(AnswerRow.value, String) == YES_JSON, 1), else_=0)
    query = _answers(project_id, (CELL,), drop_banned, TaskRow.parent_id, TaskRow.key, AnswerRow.worker_id, yes)
    rows = [
        (f"{parent_id}:{key.split(':')[1]}", worker_id, label)
        for parent_id, key, worker_id, label in session.execute(query)
    ]
    return _frame(pd.Series([r[0] for r in rows]), pd.Series([r[1] for r in rows]), [r[2] for r in rows])


def _grid_votes(session: Session, project_id: int, drop_banned: bool) -> pd.DataFrame:
    """Votes of grid screens: one on each cell a screen asked about (its root grid's cells)."""
    query = _answers(
        project_id,
        (GRID,),
        drop_banned,
        AnswerRow.task_id,
        AnswerRow.worker_id,
        AnswerRow.value,
        TaskRow.grid_size,
        TaskRow.parent_id,
        TaskRow.spec,
    )
    tasks, workers, labels = [], [], []
    for task_id, worker_id, value, grid_size, parent_id, spec in session.execute(query):
        root = parent_id or task_id
        for cell, label in grid_votes(value, grid_size or 1, spec):
            tasks.append(f"{root}:{cell}")
            workers.append(worker_id)
            labels.append(label)
    return _frame(pd.Series(tasks, dtype=object), pd.Series(workers, dtype="int64"), labels)


def collect_votes(session: Session, project_id: int, drop_banned: bool = True) -> pd.DataFrame:
    """One row per (question, worker) vote: columns ``task`` (window or cell key), ``worker``, ``label`` (1 = yes)."""
    frames = [
        *_window_votes(session, project_id, drop_banned),
        _cell_votes(session, project_id, drop_banned),
        _grid_votes(session, project_id, drop_banned),
    ]
    return pd.concat(frames, ignore_index=True)


def posteriors(votes: pd.DataFrame, method: Method = "ds") -> pd.Series:
    """P(yes) per question key. Questions nobody answered are absent, not 0."""
    model = make_aggregator(method)
    if votes.empty:
        return pd.Series(dtype=float)
    if votes["label"].nunique() == 1:
        # Every aggregator agrees when every vote is the same; crowd-kit's EM needs two classes.
        return pd.Series(float(votes["label"].iloc[0]), index=pd.Index(votes["task"].unique(), name="task"))
    with warnings.catch_warnings():
        # crowd-kit 1.4 still uses pandas keywords that pandas 3 deprecates; nothing to act on here.
        warnings.filterwarnings("ignore", module=r"crowdkit\..*")
        model.fit(votes)
    probas = model.probas_
    return probas[1].astype(float) if 1 in probas.columns else pd.Series(0.0, index=probas.index)
