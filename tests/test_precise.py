"""The precise policy: extreme points localize the target, a worker picks its mask among candidates.

Driven through the library API (Project, propose, MemoryDispatcher) on the built-in benchmark
images, whose ground truth gives the true extreme points; decisions are read back from the store.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from crowdpatch.config import CrowdConfig, ProjectConfig
from crowdpatch.crowd.answer_checks import in_order
from crowdpatch.crowd.dispatch.memory import MemoryDispatcher, SimulatedClock
from crowdpatch.crowd.kinds import CORRECT, EXTREME, GRID, PICK, VERIFY
from crowdpatch.crowd.policies import precise as precise_policy
from crowdpatch.crowd.policies.precise import ABSENT, CORRECTED, FITS, NONE_FITS, candidate_names
from crowdpatch.crowd.quality import GivenAnswer, WorkerCounters, record_answer_quality, undo_answer_quality
from crowdpatch.datasets import load_mask
from crowdpatch.masks.build import MaskBuilder, build_masks
from crowdpatch.masks.candidates import CROP_SALIENCY, EDGES, GRABCUT, SALIENCY_OUTLINE, extreme_points_of, points_box
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.project import Project
from crowdpatch.simulate.run import run_simulation
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow, WorkerRow
from crowdpatch.summary import summarize

_ids = count()


def precise(config: ProjectConfig) -> None:
    config.crowd.planner = "precise"
    config.crowd.gold_rate = 0.0
    config.patches.refine = "none"
    config.precise.correction_rounds = 2  # round after round (the default asks one)


@pytest.fixture
def project(make_project) -> Project:
    return make_project(n_images=4, size=96, configure=precise)


@pytest.fixture
def dispatcher(project: Project) -> MemoryDispatcher:
    return MemoryDispatcher(project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock(0.0))


def workers(project: Project, n: int) -> list[int]:
    with project.sessions.begin() as session:
        rows = [WorkerRow(project_id=project.id, platform="local", external_id=f"w{next(_ids)}") for _ in range(n)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def answer(dispatcher: MemoryDispatcher, worker: int, kind: str, value: Any) -> int:
    """``worker`` takes the next question (which must be of ``kind``) and answers ``value``; its task id."""
    assignment = dispatcher.next_task(worker)
    assert assignment is not None and assignment.kind == kind, assignment
    dispatcher.submit(worker, assignment.task_id, value, client_id=f"c{next(_ids)}", seconds=2.0, time_source="modeled")
    return assignment.task_id


def tasks(project: Project, image_id: int, kind: str) -> list[TaskRow]:
    with project.sessions() as session:
        rows = session.scalars(
            select(TaskRow).where(TaskRow.image_id == image_id, TaskRow.kind == kind).order_by(TaskRow.id)
        ).all()
        session.expunge_all()
        return list(rows)


def truth(project: Project, image_id: int) -> np.ndarray:
    with project.sessions() as session:
        image = session.get(ImageRow, image_id)
        return load_mask(image.mask_path, (image.width, image.height))


def first_image_of(project: Project) -> int:
    with project.sessions() as session:
        return session.scalar(select(ImageRow.id).order_by(ImageRow.id))


def first_image(project: Project) -> int:
    with project.sessions() as session:
        return session.scalar(select(TaskRow.image_id).where(TaskRow.kind == EXTREME).order_by(TaskRow.id))


def test_each_image_starts_with_one_extreme_points_question_and_no_verification(project: Project) -> None:
    with project.sessions() as session:
        kinds = session.execute(select(TaskRow.kind, TaskRow.image_id)).all()
        whole = session.scalars(select(RegionRow.source)).all()
    assert sorted(kind for kind, _ in kinds) == [EXTREME] * 4
    assert len({image for _, image in kinds}) == 4
    assert set(whole) == {"whole"}


def test_points_make_a_pick_and_the_picked_candidate_is_the_mask(project: Project, dispatcher) -> None:
    (worker,) = workers(project, 1)
    image_id = first_image(project)
    gt = truth(project, image_id)
    points = extreme_points_of(gt == 1)
    extreme_id = answer(dispatcher, worker, EXTREME, {"points": points})
    (pick,) = tasks(project, image_id, PICK)
    assert pick.parent_id == extreme_id
    assert pick.spec == {"points": points, "candidates": candidate_names(project.config, image_id)}
    x0, y0, x1, y1 = pick.box
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert x0 <= min(xs) and x1 > max(xs) and y0 <= min(ys) and y1 > max(ys)  # the view holds the points

    second, third = workers(project, 2)
    answer(dispatcher, second, PICK, {"choice": pick.spec["candidates"].index(GRABCUT)})
    (pick,) = tasks(project, image_id, PICK)
    assert pick.state == "done" and pick.decision == GRABCUT
    (correction,) = tasks(project, image_id, CORRECT)  # the picked mask's errors, by another worker
    assert correction.spec == {"points": points, "pick": pick.id, "candidate": GRABCUT, "rounds": []}
    assert correction.box == pick.box

    answer(dispatcher, third, CORRECT, {"clicks": []})
    assert tasks(project, image_id, CORRECT)[0].decision == FITS
    with project.sessions() as session:
        assert session.get(ImageRow, image_id).stage == "done"
    mask = MaskBuilder(project).image_mask(image_id)
    assert mask.picked
    assert mask_iou(mask.soft >= 0.5, gt) > 0.8  # a shape on a plain background: GrabCut finds it


def picked_image(project: Project, dispatcher: MemoryDispatcher, crew) -> tuple[int, np.ndarray]:
    """An image whose GrabCut candidate a worker picked; its ground truth."""
    image_id = first_image(project)
    gt = truth(project, image_id)
    answer(dispatcher, next(crew), EXTREME, {"points": extreme_points_of(gt == 1)})
    answer(dispatcher, next(crew), PICK, {"choice": candidate_names(project.config, image_id).index(GRABCUT)})
    return image_id, gt


def test_clicks_on_errors_redraw_the_mask_round_after_round(project: Project, dispatcher) -> None:
    crew = iter(workers(project, 4))
    image_id, gt = picked_image(project, dispatcher, crew)
    before = MaskBuilder(project).image_mask(image_id).soft >= 0.5
    box = points_box(tasks(project, image_id, CORRECT)[0].spec["points"], 96, 96)
    inside = np.zeros_like(before)
    inside[box.y0 : box.y1, box.x0 : box.x1] = True
    ys, xs = np.nonzero(inside & ~before)  # a spot inside the object's ends the mask left out: "object here"
    click = [float(xs[0]), float(ys[0])]
    answer(dispatcher, next(crew), CORRECT, {"clicks": [click]})
    first, second = tasks(project, image_id, CORRECT)
    assert first.decision == CORRECTED and second.spec["rounds"] == [[click]]
    after = MaskBuilder(project).image_mask(image_id).soft >= 0.5
    assert after[int(click[1]), int(click[0])]  # the click's spot is object now

    answer(dispatcher, next(crew), CORRECT, {"clicks": [click]})  # the last round: its clicks still count
    assert [t.state for t in tasks(project, image_id, CORRECT)] == ["done", "done"]
    with project.sessions() as session:
        assert session.get(ImageRow, image_id).stage == "done"


def test_no_correction_rounds_means_the_pick_is_the_mask(make_project) -> None:
    def configure(config: ProjectConfig) -> None:
        precise(config)
        config.precise.correction_rounds = 0

    project = make_project(n_images=1, size=96, configure=configure)
    dispatcher = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock()
    )
    image_id, _ = picked_image(project, dispatcher, iter(workers(project, 2)))
    assert tasks(project, image_id, CORRECT) == []
    with project.sessions() as session:
        assert session.get(ImageRow, image_id).stage == "done"


def test_not_here_twice_means_no_target_no_mask_and_the_summary_says_so(project: Project, dispatcher) -> None:
    first, second = workers(project, 2)
    image_id = first_image(project)
    answer(dispatcher, first, EXTREME, {"not_here": True})
    (extreme,) = tasks(project, image_id, EXTREME)
    assert extreme.state == "open" and extreme.votes_wanted == 2  # one "not here" may be a careless worker
    answer(dispatcher, second, EXTREME, {"not_here": True})
    (extreme,) = tasks(project, image_id, EXTREME)
    assert extreme.state == "done" and extreme.decision == ABSENT
    assert tasks(project, image_id, PICK) == []
    assert not MaskBuilder(project).image_mask(image_id).soft.any()
    assert summarize(project, [])["images_without_target_by_crowd"] == 1


def test_points_after_a_not_here_are_used(project: Project, dispatcher) -> None:
    first, second = workers(project, 2)
    image_id = first_image(project)
    points = extreme_points_of(truth(project, image_id) == 1)
    answer(dispatcher, first, EXTREME, {"not_here": True})
    answer(dispatcher, second, EXTREME, {"points": points})
    (pick,) = tasks(project, image_id, PICK)
    assert pick.spec["points"] == points


def test_no_fitting_candidate_asks_the_points_again_then_a_grid_at_the_objects_scale(make_project) -> None:
    project = make_project(n_images=1, size=96, configure=precise)
    dispatcher = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock()
    )
    crew = iter(workers(project, 8))
    image_id = first_image(project)
    points = extreme_points_of(truth(project, image_id) == 1)
    answer(dispatcher, next(crew), EXTREME, {"points": points})
    answer(dispatcher, next(crew), PICK, {"choice": None})
    assert tasks(project, image_id, PICK)[0].state == "open"  # "none" is costly: a second opinion first
    answer(dispatcher, next(crew), PICK, {"choice": None})
    assert tasks(project, image_id, PICK)[0].decision == NONE_FITS
    extremes = tasks(project, image_id, EXTREME)
    assert [t.key for t in extremes] == ["extreme:1", "extreme:2"]

    answer(dispatcher, next(crew), EXTREME, {"points": points})
    answer(dispatcher, next(crew), PICK, {"choice": None})
    answer(dispatcher, next(crew), PICK, {"choice": None})
    (grid,) = tasks(project, image_id, GRID)
    with project.sessions() as session:
        region = session.get(RegionRow, grid.region_id)
        assert region.source == "extreme" and region.verdict == "accepted"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0, x1, y1 = region.box
    assert x0 <= min(xs) and x1 > max(xs) and y0 <= min(ys) and y1 > max(ys)
    assert (x1 - x0) * (y1 - y0) < 96 * 96  # at the object's scale, not the whole photo


def test_a_pick_between_several_candidates_follows_the_majority(project: Project, dispatcher) -> None:
    crew = iter(workers(project, 4))
    image_id = first_image(project)
    points = extreme_points_of(truth(project, image_id) == 1)
    answer(dispatcher, next(crew), EXTREME, {"points": points})
    with project.sessions.begin() as session:
        pick = session.scalar(select(TaskRow).where(TaskRow.image_id == image_id, TaskRow.kind == PICK))
        pick.spec = {"points": points, "candidates": [CROP_SALIENCY, GRABCUT]}
    dispatcher = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock()
    )
    answer(dispatcher, next(crew), PICK, {"choice": 1})
    assert tasks(project, image_id, PICK)[0].decision == GRABCUT
    assert tasks(project, image_id, CORRECT)[0].spec["candidate"] == GRABCUT


def test_a_learned_saliency_backend_adds_its_crop_to_both_grabcuts() -> None:
    config = ProjectConfig(name="p", target="horse")
    assert candidate_names(config) == [GRABCUT, EDGES]
    config.saliency.backend = "csnet"
    assert candidate_names(config) == [GRABCUT, EDGES, CROP_SALIENCY]


def test_a_simulated_crowd_finishes_every_image_with_precise_masks(project: Project) -> None:
    report = run_simulation(project, workers=6)
    assert report.open_questions == 0
    stats = build_masks(project)
    ious = [s.iou for s in stats]
    assert len(ious) == 4 and np.mean(ious) > 0.7
    summary = summarize(project, stats)
    assert summary["complete"] and set(summary["answers_by_kind"]) >= {EXTREME, PICK, CORRECT}


def test_points_out_of_order_are_asked_again(project: Project, dispatcher) -> None:
    first, second = workers(project, 2)
    image_id = first_image(project)
    top, bottom, left, right = extreme_points_of(truth(project, image_id) == 1)
    answer(dispatcher, first, EXTREME, {"points": [left, right, top, bottom]})  # clicked as if anywhere
    (extreme,) = tasks(project, image_id, EXTREME)
    assert extreme.state == "open" and extreme.votes_wanted == 2
    answer(dispatcher, second, EXTREME, {"points": [top, bottom, left, right]})
    (pick,) = tasks(project, image_id, PICK)
    assert pick.spec["points"] == [top, bottom, left, right]


def test_in_order_tells_careful_points_from_random_ones() -> None:
    assert in_order([[50, 10], [55, 90], [10, 50], [95, 45]])
    assert in_order([[12, 10], [55, 90], [10, 12], [95, 45]])  # top and left ends meet at a corner
    rng = np.random.default_rng(0)
    random_pass = np.mean([in_order(rng.uniform(0, 100, (4, 2)).tolist()) for _ in range(2000)])
    assert random_pass < 0.03


def test_extreme_points_are_their_own_gold_question_so_a_worker_clicking_anywhere_is_stopped() -> None:
    crowd = CrowdConfig()
    careful, careless = (WorkerCounters(i, None, 0, 0, 0, None, False, None) for i in (1, 2))
    ends = {"points": [[50, 10], [55, 90], [10, 50], [95, 45]]}
    anywhere = {"points": [[10, 50], [95, 45], [50, 10], [55, 90]]}
    assert not any(record_answer_quality(careful, GivenAnswer(EXTREME, ends, 7.0), crowd) for _ in range(10))
    assert (careful.gold_seen, careful.gold_correct, careful.banned) == (10, 10, False)
    stopped = [record_answer_quality(careless, GivenAnswer(EXTREME, anywhere, 7.0), crowd) for _ in range(10)]
    assert careless.banned and careless.stopped_reason == "gold" and stopped.index(True) < 5
    record_answer_quality(careful, GivenAnswer(EXTREME, {"not_here": True}, 7.0), crowd)
    assert careful.gold_seen == 10  # "not here" carries no check


def test_taking_back_extreme_points_takes_back_their_check(make_project) -> None:
    project = make_project(n_images=1, size=32)
    crowd = project.config.crowd
    with project.sessions.begin() as session:
        worker = WorkerRow(project_id=project.id, platform="local", external_id="w", attributes={})
        session.add(worker)
        given = GivenAnswer(EXTREME, {"points": [[10, 50], [95, 45], [50, 10], [55, 90]]}, 7.0)
        record_answer_quality(worker, given, crowd, session=session)
        assert (worker.gold_seen, worker.gold_correct) == (1, 0)
        session.flush()
        undo_answer_quality(session, worker, given, crowd)
        assert (worker.gold_seen, worker.gold_correct, worker.quality) == (0, 0, None)


def test_candidates_take_turns_first_so_a_first_choice_habit_is_no_method_bias() -> None:
    config = ProjectConfig(name="p", target="horse")
    config.saliency.backend = "csnet"
    assert candidate_names(config, 1) == [EDGES, CROP_SALIENCY, GRABCUT]
    assert candidate_names(config, 2) == [CROP_SALIENCY, GRABCUT, EDGES]


@pytest.fixture
def outlined(make_project, monkeypatch) -> tuple[Project, MemoryDispatcher]:
    """One image whose first question is an outline check (the truth stands in for a learned saliency map)."""
    monkeypatch.setattr(precise_policy, "LEARNED_BACKENDS", ("gt",))

    def configure(config: ProjectConfig) -> None:
        precise(config)
        config.saliency.backend = "gt"

    project = make_project(n_images=1, size=96, configure=configure)
    dispatcher = MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(0), SimulatedClock()
    )
    return project, dispatcher


def test_an_accepted_outline_is_corrected_like_a_pick(outlined) -> None:
    project, dispatcher = outlined
    checker, second, corrector = workers(project, 3)
    answer(dispatcher, checker, VERIFY, "yes")  # an outline check, shown as a verification
    assert tasks(project, first_image_of(project), CORRECT) == []  # a "yes" must be sure: a second answer
    answer(dispatcher, second, VERIFY, "yes")
    with project.sessions() as session:
        image_id = session.scalar(select(ImageRow.id))
    (correction,) = tasks(project, image_id, CORRECT)
    gt = truth(project, image_id)
    assert correction.spec["candidate"] == SALIENCY_OUTLINE and correction.spec["points"] == extreme_points_of(gt == 1)
    x0, y0, x1, y1 = correction.box
    assert (x1 - x0) * (y1 - y0) < 96 * 96  # shown at the object's scale
    answer(dispatcher, corrector, CORRECT, {"clicks": []})
    mask = MaskBuilder(project).image_mask(image_id)
    assert mask_iou(mask.soft >= 0.5, gt) > 0.95


def test_one_no_rejects_an_outline_and_asks_for_the_extreme_points(outlined) -> None:
    project, dispatcher = outlined
    (checker,) = workers(project, 1)
    answer(dispatcher, checker, VERIFY, "no")
    image_id = first_image_of(project)
    assert [t.key for t in tasks(project, image_id, EXTREME)] == ["extreme:1"]
