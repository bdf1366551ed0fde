"""Votes -> per-question posteriors with crowd-kit.

Aggregation is per window (or per grid cell), never per pixel: a worker who never saw a window did
not vote on it. One grid screen is one vote on each of its cells: a cell left unclicked is a "no". The adaptive
policy's grids are read on a finer lattice: a coarse first look votes on every fine cell under
each of its cells, a boundary round only on the cells it showed, a single-cell follow-up on its cell;
all of them are items of the region's first grid.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Literal

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdpatch.patches.lattice import coarse_parents
from crowdpatch.registry import Registry
from crowdpatch.store.models import AnswerRow, TaskRow, WorkerRow

if TYPE_CHECKING:  # crowd-kit (with scikit-learn and SciPy's statistics) loads when an aggregator is first built
    from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote

Method = Literal["ds", "mv", "glad"]


AGGREGATORS: Registry[Callable[[], Any]] = Registry("aggregation method")
"""crowd-kit aggregators by method name (``[aggregation] method``), each built fresh per use."""


@AGGREGATORS.register("ds")
def dawid_skene() -> DawidSkene:
    from crowdkit.aggregation import DawidSkene

    return DawidSkene(n_iter=100, tol=1e-5)


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


def collect_votes(session: Session, project_id: int, drop_banned: bool = True) -> pd.DataFrame:
    """One row per (question, worker) vote: columns ``task`` (window or cell key), ``worker``, ``label`` (1 = yes)."""
    query = (
        select(
            AnswerRow.task_id,
            AnswerRow.worker_id,
            AnswerRow.value,
            TaskRow.kind,
            TaskRow.grid_size,
            TaskRow.key,
            TaskRow.parent_id,
            TaskRow.spec,
        )
        .join(TaskRow, TaskRow.id == AnswerRow.task_id)
        .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
        .where(TaskRow.project_id == project_id, TaskRow.kind.in_(("patch", "grid", "cell")))
    )
    if drop_banned:
        query = query.where(WorkerRow.banned.is_(False))
    rows: list[tuple[str, str, int]] = []
    for task_id, worker_id, value, kind, grid_size, key, parent_id, spec in session.execute(query):
        if kind == "cell":
            # A single-cell follow-up is one more vote on its grid's cell.
            rows.append((f"{parent_id}:{key.split(':')[1]}", str(worker_id), int(value == "yes")))
        elif kind == "grid":
            root = parent_id or task_id
            rows.extend(
                (f"{root}:{cell}", str(worker_id), int(label))
                for cell, label in grid_votes(value, grid_size or 1, spec)
            )
        else:
            rows.append((str(task_id), str(worker_id), int(value == "yes")))
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


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
