"""Votes -> per-question posteriors (crowd-kit) and the worker-quality table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from crowdpatch.aggregate import collect_votes, make_aggregator, posteriors, worker_quality
from crowdpatch.store.db import make_engine
from crowdpatch.store.models import AnswerRow, Base, ImageRow, ProjectRow, TaskRow, WorkerRow
from helpers.postgres import fresh_schema
from helpers.votes import simulate_votes

# crowd-kit still passes pandas keywords that pandas 3 deprecates; that is crowd-kit's to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit")


def accuracy(probability_yes: pd.Series, truth: pd.Series) -> float:
    decided = (probability_yes.reindex(truth.index) >= 0.5).astype(int)
    return float((decided == truth).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dawid_skene_sees_through_always_yes_spammers_where_majority_vote_does_not(seed: int) -> None:
    votes, truth = simulate_votes(seed)
    ds = accuracy(posteriors(votes, "ds"), truth)
    mv = accuracy(posteriors(votes, "mv"), truth)
    assert ds >= mv + 0.05, (ds, mv)
    assert ds >= 0.85


def test_posteriors_are_keyed_by_every_answered_question() -> None:
    votes, truth = simulate_votes(3, tasks=60)
    for method in ("ds", "mv"):
        result = posteriors(votes, method)
        assert set(result.index) == set(truth.index)
        assert result.between(0, 1).all()


def test_glad_gives_probabilities() -> None:
    votes, truth = simulate_votes(4, tasks=100)
    result = posteriors(votes, "glad")
    assert set(result.index) == set(truth.index)
    assert result.notna().all()
    assert result.between(0, 1).all()
    assert accuracy(result, truth) > 0.7


@settings(max_examples=25, deadline=None)
@given(
    label=st.sampled_from([0, 1]),
    method=st.sampled_from(["ds", "mv", "glad"]),
    pairs=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 4)), min_size=1, max_size=30, unique=True),
)
def test_unanimous_votes_give_that_label(label: int, method: str, pairs: list[tuple[int, int]]) -> None:
    votes = pd.DataFrame([(f"t{t}", f"w{w}", label) for t, w in pairs], columns=["task", "worker", "label"])
    result = posteriors(votes, method)
    assert set(result.index) == set(votes["task"])
    assert (result == float(label)).all()


@pytest.mark.parametrize("method", ["ds", "mv", "glad"])
def test_no_votes_give_no_posteriors(method: str) -> None:
    result = posteriors(pd.DataFrame(columns=["task", "worker", "label"]), method)
    assert isinstance(result, pd.Series)
    assert result.empty


def test_an_unknown_aggregation_method_is_refused() -> None:
    votes, _ = simulate_votes(5, tasks=10)
    with pytest.raises(ValueError, match="unknown aggregation method"):
        posteriors(votes, "wawa")
    with pytest.raises(ValueError):
        make_aggregator("")


def test_an_unknown_aggregation_method_is_refused_even_before_votes_disagree() -> None:
    unanimous = pd.DataFrame([("t0", "w0", 1), ("t0", "w1", 1)], columns=["task", "worker", "label"])
    with pytest.raises(ValueError):
        posteriors(unanimous, "wawa")


# -- votes from the store, and the worker-quality table ---------------------------------------------


@pytest.fixture()
def store():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def add_project(session: Session, name: str) -> tuple[ProjectRow, ImageRow]:
    project = ProjectRow(name=name, target="horse")
    session.add(project)
    session.flush()
    image = ImageRow(project_id=project.id, path=f"{name}.png", width=64, height=64)
    session.add(image)
    session.flush()
    return project, image


def add_task(session: Session, project: ProjectRow, image: ImageRow, kind: str, key: str, grid_size=None, gold=None):
    task = TaskRow(
        project_id=project.id,
        image_id=image.id,
        kind=kind,
        key=key,
        box=[0, 0, 32, 32],
        grid_size=grid_size,
        votes_wanted=3,
        gold_answer=gold,
    )
    session.add(task)
    session.flush()
    return task


def add_worker(session: Session, project: ProjectRow, name: str, **fields) -> WorkerRow:
    worker = WorkerRow(project_id=project.id, platform="local", external_id=name, **fields)
    session.add(worker)
    session.flush()
    return worker


def answer(session: Session, task: TaskRow, worker: WorkerRow, value, seconds: float = 2.0) -> None:
    session.add(
        AnswerRow(
            task_id=task.id,
            worker_id=worker.id,
            value=value,
            client_id=f"{task.id}-{worker.id}",
            shown_at=0.0,
            answered_at=seconds,
            seconds=seconds,
            time_source="measured",
        )
    )
    session.flush()


def test_collected_votes_count_an_unclicked_grid_cell_as_no_and_drop_banned_workers(store: Session) -> None:
    project, image = add_project(store, "mine")
    window = add_task(store, project, image, "patch", "1:0:0")
    grid = add_task(store, project, image, "grid", "grid", grid_size=2)
    verify = add_task(store, project, image, "verify", "verify")
    good = add_worker(store, project, "good")
    banned = add_worker(store, project, "banned", banned=True)
    answer(store, window, good, "yes")
    answer(store, window, banned, "no")
    answer(store, grid, good, {"cells": [1, 2]})
    answer(store, verify, good, "yes")
    other, other_image = add_project(store, "other")
    answer(store, add_task(store, other, other_image, "patch", "1:0:0"), add_worker(store, other, "x"), "yes")

    votes = collect_votes(store, project.id)
    got = {(row.task, row.label) for row in votes.itertuples()}
    assert got == {
        (str(window.id), 1),
        (f"{grid.id}:0", 0),
        (f"{grid.id}:1", 1),
        (f"{grid.id}:2", 1),
        (f"{grid.id}:3", 0),
    }
    assert set(votes["worker"]) == {str(good.id)}

    everyone = collect_votes(store, project.id, drop_banned=False)
    assert (
        (everyone["task"] == str(window.id)) & (everyone["label"] == 0) & (everyone["worker"] == str(banned.id))
    ).any()


def test_worker_quality_reports_gold_accuracy_agreement_and_speed(store: Session) -> None:
    project, image = add_project(store, "mine")
    windows = [add_task(store, project, image, "patch", f"1:{i}:0") for i in range(3)]
    careful = add_worker(store, project, "careful", gold_seen=4, gold_correct=3)
    contrary = add_worker(store, project, "contrary", banned=True)
    add_worker(store, project, "idle")
    for task, value in zip(windows, ["yes", "no", "yes"]):
        answer(store, task, careful, value, seconds=2.0)
    for task, value in zip(windows, ["no", "yes", "yes"]):
        answer(store, task, contrary, value, seconds=0.5)
    consensus = pd.Series({str(windows[0].id): 0.9, str(windows[1].id): 0.1, str(windows[2].id): 0.5})

    table = worker_quality(store, project.id, consensus).set_index("worker")
    assert table.loc["careful", "answers"] == 3
    assert table.loc["careful", "gold_accuracy"] == pytest.approx(0.75)
    assert table.loc["careful", "agreement"] == pytest.approx(1.0)
    assert table.loc["careful", "yes_rate"] == pytest.approx(2 / 3)
    assert table.loc["careful", "median_seconds"] == pytest.approx(2.0)
    assert table.loc["contrary", "agreement"] == pytest.approx(1 / 3)
    assert table.loc["contrary", "median_seconds"] == pytest.approx(0.5)
    assert bool(table.loc["contrary", "banned"]) is True
    assert table.loc["idle", "answers"] == 0
    assert math.isnan(table.loc["idle", "gold_accuracy"])
    assert math.isnan(table.loc["idle", "agreement"])


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request):
    """An empty store on each backend (PostgreSQL: a fresh schema, skipped without a server)."""
    if request.param == "sqlite":
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            yield session
        engine.dispose()
        return
    with fresh_schema() as url:
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            yield session
        engine.dispose()


def test_collected_votes_read_follow_ups_and_boundary_rounds_as_votes_on_their_grid_cells(any_store: Session) -> None:
    project, image = add_project(any_store, "mine")
    root = add_task(any_store, project, image, "grid", "grid", grid_size=2)
    boundary = add_task(any_store, project, image, "grid", "grid:1", grid_size=2)
    boundary.parent_id, boundary.spec = root.id, {"active": [1, 3]}
    follow_up = add_task(any_store, project, image, "cell", "cell:3")
    follow_up.parent_id = root.id
    window = add_task(any_store, project, image, "patch", "1:0:0")
    first, second = add_worker(any_store, project, "first"), add_worker(any_store, project, "second")
    answer(any_store, root, first, {"cells": [3]})
    answer(any_store, boundary, second, {"cells": [1]})
    answer(any_store, follow_up, second, "yes")
    answer(any_store, follow_up, first, "no")
    answer(any_store, window, second, "no")

    votes = collect_votes(any_store, project.id)
    got = sorted(votes.itertuples(index=False, name=None))
    w1, w2, r = str(first.id), str(second.id), root.id
    assert got == sorted(
        [
            *[(f"{r}:{cell}", w1, int(cell == 3)) for cell in range(4)],
            (f"{r}:1", w2, 1),
            (f"{r}:3", w2, 0),
            (f"{r}:3", w2, 1),
            (f"{r}:3", w1, 0),
            (str(window.id), w2, 0),
        ]
    )
    assert votes["label"].dtype == np.int64


def test_no_answers_collect_an_empty_frame_of_votes(store: Session) -> None:
    project, _ = add_project(store, "empty")
    votes = collect_votes(store, project.id)
    assert votes.empty and list(votes.columns) == ["task", "worker", "label"]
    assert posteriors(votes).empty
