"""The adaptive planner: one answer at a time, only where it can change the mask, and why.

Driven through the library API (Project, propose, MemoryDispatcher) on small built-in projects; the
decisions are read back from the store, where the server's planner reads them too.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.dispatch.memory import MemoryDispatcher, SimulatedClock
from crowdpatch.crowd.policies import policy_for, posteriors
from crowdpatch.crowd.policies.posteriors import cell_posteriors, worker_accuracies, yes_posterior
from crowdpatch.masks.build import UNREFINED_OUTLINE, MaskBuilder
from crowdpatch.patches.lattice import grid_cells
from crowdpatch.project import Project
from crowdpatch.saliency.outline import outline_mask, salient_pixels
from crowdpatch.simulate.run import run_simulation
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow

NOW = 1000.0
_ids = count()


def adaptive(budget: float | None = None, outline: bool = True, first_look: int = 4):
    def configure(config: ProjectConfig) -> None:
        config.crowd.planner = "adaptive"
        config.patches.refine = "none"  # masks compared cell for cell
        config.adaptive.first_look = first_look
        config.crowd.gold_rate = 0.0
        config.adaptive.budget_seconds = budget
        config.adaptive.outline = outline
        config.saliency.top_k = 1

    return configure


def add_workers(project: Project, n: int, gold: tuple[int, int] = (0, 0)) -> list[int]:
    with project.sessions.begin() as session:
        rows = [
            WorkerRow(
                project_id=project.id,
                platform="local",
                external_id=f"w{next(_ids)}",
                gold_seen=gold[0],
                gold_correct=gold[1],
            )
            for i in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def answer(planner: MemoryDispatcher, worker: int, task_id: int, value: Any, seconds: float = 1.6):
    assignment = planner.next_task(worker)
    assert assignment is not None and assignment.task_id == task_id, (assignment, task_id)
    return planner.submit(
        worker,
        task_id,
        value,
        client_id=f"a{next(_ids)}",
        seconds=seconds,
        time_source="modeled",
    )


def first_image_with_cluster(project: Project) -> int:
    with project.sessions() as session:
        return session.scalar(select(TaskRow.image_id).where(TaskRow.kind == "verify").order_by(TaskRow.id))


def open_tasks(project: Project, image_id: int) -> list[TaskRow]:
    with project.sessions() as session:
        return list(
            session.scalars(
                select(TaskRow).where(TaskRow.image_id == image_id, TaskRow.state == "open").order_by(TaskRow.id)
            )
        )


def verified_region(project: Project, image_id: int, planner: MemoryDispatcher, workers) -> TaskRow:
    """Two workers accept the image's cluster; the adaptive planner's next question about it."""
    verify = open_tasks(project, image_id)[0]
    answer(planner, next(workers), verify.id, "yes")
    answer(planner, next(workers), verify.id, "yes")
    (question,) = open_tasks(project, image_id)
    return question


def single_image_project(make_project, **kwargs) -> tuple[Project, int]:
    project = make_project(n_images=1, size=64, configure=adaptive(**kwargs))
    return project, first_image_with_cluster(project)


# -- the evidence ------------------------------------------------------------------------------


def test_posterior_weighs_answers_by_worker_accuracy() -> None:
    assert yes_posterior(0.5, [(0.85, True)]) == pytest.approx(0.85)
    assert yes_posterior(0.5, [(0.85, True), (0.85, True)]) > 0.95
    assert yes_posterior(0.5, [(0.85, True), (0.85, False)]) == pytest.approx(0.5)
    # A worker at chance (a spammer by its gold) moves nothing.
    assert yes_posterior(0.5, [(0.5, True)] * 5) == pytest.approx(0.5)


def test_worker_accuracy_comes_from_gold_shrunk_toward_the_honest_prior(make_project) -> None:
    project = make_project(n_images=1, configure=adaptive())
    fresh, good, bad = add_workers(project, 1), add_workers(project, 1, (20, 20)), add_workers(project, 1, (20, 9))
    with project.sessions() as session:
        acc = worker_accuracies(session, {fresh[0], good[0], bad[0]}, project.config)
    assert acc[fresh[0]] == pytest.approx(project.config.crowd.honest_gold_accuracy)
    assert acc[good[0]] > 0.95
    assert acc[bad[0]] < 0.6


def decided_questions(project: Project, votes: list[dict[int, str]]) -> None:
    """One decided yes/no question per entry of ``votes`` (worker id -> "yes"/"no"), answered in that order."""
    with project.sessions.begin() as session:
        image_id = session.scalar(select(ImageRow.id))
        for number, answers in enumerate(votes):
            task = TaskRow(
                project_id=project.id, image_id=image_id, kind="verify", key=f"d{number}", box=[0, 0, 8, 8],
                votes_wanted=len(answers), state="done", reason="",
            )  # fmt: skip
            session.add(task)
            session.flush()
            for worker_id, value in answers.items():
                session.add(
                    AnswerRow(
                        task_id=task.id,
                        worker_id=worker_id,
                        value=value,
                        client_id=f"c{next(_ids)}",
                        shown_at=0.0,
                        answered_at=1.0,
                        seconds=1.6,
                        time_source="modeled",
                    )  # fmt: skip
                )


def test_worker_accuracy_counts_agreement_with_agreeing_peers_over_its_recent_answers(make_project, monkeypatch):
    project = make_project(n_images=1, configure=adaptive())
    agreeing, contrary, first, second = add_workers(project, 4)
    peers = {first: "yes", second: "yes"}
    decided_questions(project, [{**peers, agreeing: "yes"} for _ in range(20)])
    decided_questions(project, [{**peers, contrary: "no"} for _ in range(20)])
    with project.sessions() as session:
        acc = worker_accuracies(session, {agreeing, contrary}, project.config)
    assert acc[agreeing] > 0.95 and acc[contrary] == 0.5  # the floor: no better than chance

    # Only its last answers count: a worker that turned careful is judged by how it answers now.
    monkeypatch.setattr(posteriors, "AGREEMENT_WINDOW", 20)
    decided_questions(project, [{**peers, contrary: "yes"} for _ in range(20)])
    with project.sessions() as session:
        assert worker_accuracies(session, {contrary}, project.config)[contrary] > 0.95


def test_an_isolated_click_is_doubted_and_a_click_inside_a_block_is_not() -> None:
    config = ProjectConfig(name="t")
    size = 6
    evidence = np.full(size * size, -1.7)  # one 0.85-accurate "no" on every cell ...
    stray = size * size - 1
    evidence[stray] = 1.7  # ... but a lone "yes" in a corner
    block = [r * size + c for r in range(1, 4) for c in range(1, 4)]
    evidence[block] = 1.7
    flat = np.full(size * size, 0.5)
    p = cell_posteriors(evidence, flat, size, config)
    assert 1 - config.adaptive.confidence < p[stray] < config.adaptive.confidence  # uncertain: worth a follow-up
    assert p[2 * size + 2] >= config.adaptive.confidence  # inside the block, the neighbours agree: decided
    assert p[5] < 1 - config.adaptive.confidence  # far from any click: decided "no"


# -- the questions -----------------------------------------------------------------------------


def test_verification_buys_a_second_answer_only_while_uncertain(make_project) -> None:
    project, image_id = single_image_project(make_project)
    verify = open_tasks(project, image_id)[0]
    assert verify.kind == "verify" and verify.votes_wanted == 1
    fresh = add_workers(project, 2)
    planner = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock(NOW)
    )
    result = answer(planner, fresh[0], verify.id, "yes")
    assert not result.task_done  # one answer of an unknown worker: 0.85 < 0.95
    result = answer(planner, fresh[1], verify.id, "yes")
    assert result.task_done

    # A worker whose gold record is excellent decides alone.
    other = make_project(n_images=1, configure=adaptive(), name="trusted")
    trusted = add_workers(other, 1, (30, 30))
    planner = MemoryDispatcher(other.sessions, other.id, other.config, np.random.default_rng(0), SimulatedClock(NOW))
    first = open_tasks(other, first_image_with_cluster(other))[0]
    assert answer(planner, trusted[0], first.id, "yes").task_done


def test_an_accepted_outline_is_the_regions_mask(make_project) -> None:
    project, image_id = single_image_project(make_project)
    workers = iter(add_workers(project, 6))
    planner = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock(NOW)
    )
    outline = verified_region(project, image_id, planner, workers)
    assert outline.kind == "outline" and "saliency" in outline.reason
    assignment = planner.next_task(next(workers))
    assert assignment.kind == "verify" and assignment.variant == "outline"
    assert "outline" in assignment.question
    planner.submit(
        assignment_worker := _holder(planner, outline.id),
        outline.id,
        "yes",
        client_id="o1",
        seconds=1.6,
        time_source="modeled",
    )
    assert assignment_worker is not None
    answer(planner, next(workers), outline.id, "yes")
    assert open_tasks(project, image_id) == []
    with project.sessions() as session:
        image = session.get(ImageRow, image_id)
        assert image.stage == "done"
        expected = outline_mask(
            salient_pixels(image.saliency_path, project.config.saliency.threshold), _box(outline.box)
        )
    mask = MaskBuilder(project).image_mask(image_id)
    assert np.array_equal(mask.soft >= 0.5, expected)


def _holder(planner: MemoryDispatcher, task_id: int) -> int:
    return next(iter(planner.open[task_id].leases))


def _box(values):
    from crowdpatch.boxes import Box

    return Box.from_list(values)


def test_a_rejected_outline_leads_to_a_coarse_look_then_boundary_questions_with_reasons(make_project) -> None:
    project, image_id = single_image_project(make_project)
    project.config.adaptive.saliency_prior = 0.0  # the answers and neighbours alone decide here
    workers = iter(add_workers(project, 80))
    planner = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock(NOW)
    )
    outline = verified_region(project, image_id, planner, workers)
    answer(planner, next(workers), outline.id, "no")
    answer(planner, next(workers), outline.id, "no")
    (root,) = open_tasks(project, image_id)
    assert root.kind == "grid" and root.grid_size == 4 and root.votes_wanted == 1
    assert "outline was rejected" in root.reason and "first look" in root.reason
    resolution = root.spec["resolution"]
    assert resolution == 8
    # The truth on the fine lattice: a 4 x 4 block of cells; the coarse look clicks the 2 x 2 block over
    # it plus one stray coarse cell in the far corner.
    truth = {r * resolution + c for r in range(2, 6) for c in range(2, 6)}
    core = {r * resolution + c for r in range(3, 5) for c in range(3, 5)}
    stray = {r * resolution + c for r in range(6, 8) for c in range(6, 8)}
    answer(planner, next(workers), root.id, {"cells": [5, 6, 9, 10, 15]}, seconds=10.3)
    follow_ups = open_tasks(project, image_id)
    assert follow_ups and all(t.parent_id == root.id for t in follow_ups)
    asked = set()
    for task in follow_ups:
        asked |= set(task.spec["active"]) if task.kind == "grid" else {int(task.key.split(":")[1])}
        assert f"grid {root.id}" in task.reason
    assert stray & asked, "the stray coarse click is doubted"
    assert not core & asked, "the middle of the clicked block is decided by the coarse look and its neighbours"
    # Every follow-up answered truthfully until nothing is left.
    while (assignment := planner.next_task(next(workers))) is not None:
        worker = _holder(planner, assignment.task_id)
        if assignment.kind == "grid":
            assert assignment.active_cells is not None
            value: Any = {"cells": [c for c in assignment.active_cells if c in truth]}
        else:
            value = "yes" if _cell_of(project, assignment.task_id) in truth else "no"
        planner.submit(
            worker, assignment.task_id, value, client_id=f"f{next(_ids)}", seconds=1.6, time_source="modeled"
        )
    assert open_tasks(project, image_id) == []
    mask = MaskBuilder(project).image_mask(image_id)
    cells = grid_cells(_box(root.box), resolution)
    inside = [
        float(mask.soft[cells[i].y0 : cells[i].y1, cells[i].x0 : cells[i].x1].mean()) for i in range(resolution**2)
    ]
    assert all(inside[i] >= 0.5 for i in core)
    assert all(inside[i] < 0.5 for i in stray)


def _cell_of(project: Project, task_id: int) -> int:
    with project.sessions() as session:
        return int(session.get(TaskRow, task_id).key.split(":")[1])


def test_a_round_answer_may_only_click_the_cells_it_showed(make_project) -> None:
    from crowdpatch.crowd.dispatch.rules import AnswerRejected, validate_answer

    assert validate_answer("grid", {"cells": [3, 9]}, 8, [3, 9, 10]) == {"cells": [3, 9]}
    with pytest.raises(AnswerRejected, match="not shown"):
        validate_answer("grid", {"cells": [3, 4]}, 8, [3, 9, 10])


def test_budget_stops_questions_and_keeps_the_saliency_outline(make_project) -> None:
    # One yes/no answer (1.6 s) leaves 1.4 s of a 3-second budget: no second vote, no outline check, no grid.
    project, image_id = single_image_project(make_project, budget=3.0)
    workers = iter(add_workers(project, 4))
    planner = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock(NOW)
    )
    verify = open_tasks(project, image_id)[0]
    assert answer(planner, next(workers), verify.id, "yes").task_done
    assert open_tasks(project, image_id) == []
    mask = MaskBuilder(project).image_mask(image_id)
    assert mask.soft.max() == pytest.approx(UNREFINED_OUTLINE)


def test_grid_shrinks_to_fit_the_budget(make_project) -> None:
    # 3.2 s spent on verification; 12 s left affords a 4 x 4 first look (10.3 s), not the 8 x 8 asked for (41 s).
    project, image_id = single_image_project(make_project, budget=15.5, outline=False, first_look=8)
    workers = iter(add_workers(project, 4))
    planner = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock(NOW)
    )
    grid = verified_region(project, image_id, planner, workers)
    assert grid.kind == "grid" and grid.grid_size == 4


def test_simulated_project_spends_fewer_seconds_than_the_fixed_planner(make_project) -> None:
    """Same images, same simulated crowd: the adaptive planner asks less, and still builds a mask per image."""
    spent = {}
    for name in ("fixed", "adaptive"):

        def configure(config: ProjectConfig, name=name) -> None:
            config.crowd.planner = name

        project = make_project(n_images=16, configure=configure, name=name)
        report = run_simulation(project, workers=10)
        assert report.open_questions == 0
        with project.sessions() as session:
            stages = set(session.scalars(select(ImageRow.stage).where(ImageRow.project_id == project.id)))
            from sqlalchemy import func

            from crowdpatch.store.models import AnswerRow

            spent[name] = session.scalar(
                select(func.sum(AnswerRow.seconds))
                .join(TaskRow)
                .where(TaskRow.project_id == project.id, TaskRow.kind != "gold")
            )
        assert stages == {"done"}
        assert policy_for(project.config).name == name
    assert spent["adaptive"] < spent["fixed"]
