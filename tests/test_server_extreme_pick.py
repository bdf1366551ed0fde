"""Extreme-point, pick and correction questions through the JSON API: what a worker sees, which answers are taken."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.memory import MemoryDispatcher
from crowdpatch.crowd.dispatch.rules import MAX_CLICKS, AnswerRejected, validate_answer
from crowdpatch.crowd.kinds import question_text
from crowdpatch.masks.candidates import CROP_SALIENCY, GRABCUT
from crowdpatch.server.app import create_app
from crowdpatch.server.platforms import register_worker
from crowdpatch.server.tokens import image_signature
from crowdpatch.store.models import AnswerRow
from helpers.extreme_pick import (
    ask_correct,
    ask_correction_only,
    ask_extreme,
    ask_pick,
    image_ids,
    scene_extreme_points,
    unproposed_project,
)
from helpers.sessions import open_session

WIDTH, HEIGHT = 320, 200
"""The size of the ``landscape_photos``."""


@pytest.fixture
def project(tmp_path, landscape_photos):
    """Image 1: an extreme question; image 2: a pick between two candidates (both open, nothing else asked)."""
    project = unproposed_project(tmp_path / "horses", landscape_photos)
    first, second = image_ids(project)[:2]
    ask_extreme(project, first)
    ask_pick(project, ask_extreme(project, second), scene_extreme_points(), [CROP_SALIENCY, GRABCUT])
    yield project
    project.close()


@pytest.fixture
def client(project):
    with TestClient(create_app(project)) as client:
        yield client


def next_of_kind(client, auth, kind: str) -> dict:
    """The next task this worker is handed that is of ``kind`` (the others stay leased to it)."""
    held: list[str] = []
    while True:
        response = client.get("/api/v1/tasks/next", params={"exclude": ",".join(held)} if held else None, headers=auth)
        assert response.status_code == 200, response.text
        task = response.json()
        if task["kind"] == kind:
            return task
        held.append(task["task_id"])


def answer(client, auth, task, value, client_id="c"):
    body = {"task_id": task["task_id"], "answer": value, "client_id": client_id, "client_ms": 2000}
    return client.post("/api/v1/answers", json=body, headers=auth)


def picture(client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    return Image.open(io.BytesIO(response.content))


def stored(project, task) -> object:
    with project.sessions() as session:
        return session.scalar(select(AnswerRow.value).where(AnswerRow.task_id == int(task["task_id"])))


CORNERS = [[160.5, 20.25], [150, 180], [40, 100], [WIDTH, HEIGHT]]
"""Four clicks inside the image, its far corner included."""


def test_an_extreme_question_shows_the_whole_photo_and_stores_the_four_points(project, client):
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "extreme")
    assert task["question"] == question_text("extreme", "horse")
    assert task["view_box"] == [0, 0, WIDTH, HEIGHT] and task["choice_urls"] is None
    assert picture(client, task["image_url"] + "&px=640").size == (640, 400)
    assert answer(client, auth, task, {"points": CORNERS}).status_code == 201
    assert stored(project, task) == {"points": [[160.5, 20.25], [150.0, 180.0], [40.0, 100.0], [320.0, 200.0]]}


@pytest.mark.parametrize(
    ("points", "says"),
    [
        ([[10, 10], [20, 20], [30, 30], [WIDTH + 0.5, 50]], "outside the 320 x 200 image"),
        ([[10, 10], [20, 20], [30, -1], [40, 50]], "outside the 320 x 200 image"),
        ([[10, 10], [20, 20], [30, 30]], "at least 4 items"),
        ([[10, 10], [20, 20], [30, 30], [40, 40], [50, 50]], "at most 4 items"),
    ],
)
def test_extreme_points_outside_the_image_or_not_four_are_refused(project, client, points, says):
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "extreme")
    response = answer(client, auth, task, {"points": points})
    assert response.status_code == 422 and says in response.text
    assert stored(project, task) is None


def test_an_extreme_question_takes_not_here_and_refuses_the_other_forms(project, client):
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "extreme")
    numbers_as_other_things = (
        {"not_here": 1},
        {"not_here": "true"},
        {"points": [[True, 10], *CORNERS[1:]]},
        {"points": [["160.5", "20.25"], *CORNERS[1:]]},
    )
    for wrong in ("yes", {"choice": 0}, {"cells": [1]}, {"not_here": False}, {"polygon": CORNERS[:3]}):
        assert answer(client, auth, task, wrong, client_id="w").status_code == 422, wrong
    for wrong in numbers_as_other_things:
        assert answer(client, auth, task, wrong, client_id="w").status_code == 422, wrong
    assert answer(client, auth, task, {"not_here": True}).status_code == 201
    assert stored(project, task) == {"not_here": True}


def test_a_pick_shows_one_picture_per_outline_over_its_view_box(project, client):
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "pick")
    assert task["question"] == question_text("pick", "horse")
    x0, y0, x1, y1 = task["view_box"]
    assert task["box"] == task["view_box"] and 0 < x1 - x0 < WIDTH
    assert len(task["choice_urls"]) == 2
    plain = np.asarray(picture(client, task["image_url"] + "&px=300"), dtype=float)
    for url in task["choice_urls"]:
        shown = picture(client, url + "&px=300")
        assert shown.size == (300, round(300 * (y1 - y0) / (x1 - x0)))
        yellow = np.asarray(shown, dtype=float) - plain
        assert (np.abs(yellow).max(axis=-1) > 80).mean() > 0.01  # an outline is drawn over the plain view
    assert sorted(p.name for p in (project.directory / "candidates").iterdir()) == [
        f"{int(task['task_id']):08d}-{CROP_SALIENCY}.png",
        f"{int(task['task_id']):08d}-{GRABCUT}.png",
    ]
    assert client.get(task["choice_urls"][0].replace("k=0", "k=2")).status_code == 404
    extreme = next_of_kind(client, auth, "extreme")
    assert client.get(extreme["image_url"] + "&part=choice&k=0").status_code == 404


def test_a_pick_takes_a_choice_in_range_or_none(project, client):
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "pick")
    out_of_range = answer(client, auth, task, {"choice": 2}, client_id="w")
    assert out_of_range.status_code == 422 and "not one of the 2 outlines" in out_of_range.text
    for wrong in ({"choice": -1}, {"choice": True}, {"choice": "1"}, {"choice": 1.5}, {"choice": 1.0}, "no", {}):
        assert answer(client, auth, task, wrong, client_id="w").status_code == 422, wrong
    assert answer(client, auth, task, {"choice": None}).status_code == 201
    assert stored(project, task) == {"choice": None}


def test_a_pick_stores_the_outline_chosen(project, client):
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "pick")
    assert answer(client, auth, task, {"choice": 1}).status_code == 201
    assert stored(project, task) == {"choice": 1}


def test_the_rules_check_points_and_choices_where_the_dispatcher_knows_the_image_and_the_outlines():
    assert validate_answer("extreme", {"points": CORNERS}, image_size=(WIDTH, HEIGHT))["points"][3] == [320.0, 200.0]
    assert validate_answer("pick", {"choice": 1}, choices=2) == {"choice": 1}
    for kind, value, limits in (
        ("extreme", {"points": [[0, 0], [1, 1], [2, 2], [WIDTH + 1, 0]]}, {"image_size": (WIDTH, HEIGHT)}),
        ("extreme", {"points": [[0, 0], [1, 1], [2, 2], [float("nan"), 0]]}, {}),
        ("extreme", {"points": CORNERS, "not_here": True}, {}),
        ("extreme", {"not_here": 1}, {}),
        ("pick", {"choice": 1}, {"choices": 1}),
        ("pick", {"choice": False}, {}),
        ("pick", {"points": CORNERS}, {}),
    ):
        with pytest.raises(AnswerRejected):
            validate_answer(kind, value, **limits)


def leased_to_one_worker(project, dispatcher: str, count: int):
    """A dispatcher of ``dispatcher``'s sort ("memory": the simulator's, "database": the server's), a worker, and the
    ``count`` questions it leased to that worker."""
    worker = register_worker(project.sessions, project.id, "local", "w", {}).id
    if dispatcher == "memory":
        planner = MemoryDispatcher(project.sessions, project.id, project.config, np.random.default_rng(0), time.time)
        return planner, worker, [planner.next_task(worker) for _ in range(count)]
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    tasks = []
    for _ in range(count):
        tasks.append(planner.next_task(worker, exclude=tuple(task.task_id for task in tasks)))
    return planner, worker, tasks


@pytest.mark.parametrize("dispatcher", ["memory", "database"])
def test_both_dispatchers_refuse_malformed_extreme_and_pick_answers(project, dispatcher):
    planner, worker, tasks = leased_to_one_worker(project, dispatcher, 3)
    extreme = next(task for task in tasks if task.kind == "extreme")
    pick = next(task for task in tasks if task.kind == "pick")
    assert pick.choices == 2
    outside = [[10, 10], [20, 20], [30, 30], [WIDTH + 1, 50]]
    for task, wrong, says in (
        (extreme, {"points": CORNERS[:3]}, "exactly 4 points"),
        (extreme, {"points": outside}, "outside the 320 x 200 image"),
        (extreme, {"choice": 0}, "an extreme answer is"),
        (pick, {"choice": "0"}, "whole number"),
        (pick, {"choice": 2}, "not one of the 2 outlines"),
    ):
        with pytest.raises(AnswerRejected, match=says):
            planner.submit(worker, task.task_id, wrong, client_id="bad")
    assert not planner.submit(worker, extreme.task_id, {"not_here": True}, client_id="x").duplicate
    assert not planner.submit(worker, pick.task_id, {"choice": None}, client_id="y").duplicate


# -- corrections: clicks on where the picked outline is wrong ------------------------------------


@pytest.fixture
def correcting(tmp_path, landscape_photos):
    """Image 1's extreme points and pick decided, its correction (of the GrabCut outline) the one open question."""
    project = unproposed_project(tmp_path / "horses", landscape_photos)
    pick, correction = ask_correction_only(project, image_ids(project)[0], GRABCUT)
    yield project, pick, correction
    project.close()


@pytest.fixture
def correcting_client(correcting):
    with TestClient(create_app(correcting[0])) as client:
        yield client


def test_a_correction_shows_the_picked_outline_over_the_pick_view_drawn_like_the_pick(correcting, correcting_client):
    project, pick, correction = correcting
    client = correcting_client
    auth = open_session(client, project)
    task = next_of_kind(client, auth, "correct")
    assert task["task_id"] == str(correction) and task["question"] == question_text("correct", "horse")
    x0, y0, x1, y1 = task["view_box"]
    assert task["box"] == task["view_box"] and 0 < x1 - x0 < WIDTH and task["choice_urls"] is None
    shown = picture(client, task["image_url"] + "&px=300&dpr=2")
    assert shown.size == (600, round(600 * (y1 - y0) / (x1 - x0)))
    worker = int(task["image_url"].split("w=")[1].split("&")[0])
    signature = image_signature(project.config.server.session_secret, project.uid, pick, worker)
    pick_url = f"/api/v1/tasks/{pick}/image?w={worker}&s={signature}"
    grabcut = picture(client, pick_url + "&part=choice&k=1&px=300&dpr=2")
    assert np.array_equal(np.asarray(shown), np.asarray(grabcut))  # the pick's GrabCut outline, as the pick drew it
    plain = np.asarray(picture(client, pick_url + "&px=300&dpr=2"), dtype=float)  # the view box alone
    assert (np.abs(np.asarray(shown, dtype=float) - plain).max(axis=-1) > 80).mean() > 0.01
    assert client.get(task["image_url"] + "&part=choice&k=0").status_code == 404  # a correction offers no choices


def test_a_later_round_shows_the_outline_redrawn_from_the_clicks_before_it(correcting, correcting_client):
    project, pick, first = correcting
    client = correcting_client
    ends = np.array(scene_extreme_points())
    middle = [float(ends[:, 0].mean()), float(ends[:, 1].mean())]  # on the object: a click there marks background
    second = ask_correct(project, pick, GRABCUT, [[middle]])
    auth = open_session(client, project)
    shown = {}
    for _ in range(2):
        task = next_of_kind(client, auth, "correct")
        shown[int(task["task_id"])] = np.asarray(picture(client, task["image_url"] + "&px=300"), dtype=float)
        assert answer(client, auth, task, {"clicks": []}, client_id=task["task_id"]).status_code == 201
    assert (np.abs(shown[first] - shown[second]).max(axis=-1) > 80).mean() > 0.002
    assert (project.directory / "candidates" / f"{pick:08d}-{GRABCUT}-r1.png").exists()


@pytest.mark.parametrize("clicks", [[[10.5, 20.25], [WIDTH, HEIGHT]], []], ids=["two clicks", "fits"])
def test_a_correction_stores_the_clicks_or_fits(correcting, correcting_client, clicks):
    project, _, _ = correcting
    auth = open_session(correcting_client, project)
    task = next_of_kind(correcting_client, auth, "correct")
    assert answer(correcting_client, auth, task, {"clicks": clicks}).status_code == 201
    assert stored(project, task) == {"clicks": [[float(x), float(y)] for x, y in clicks]}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"clicks": [[10, 10], [WIDTH + 0.5, 50]]}, "click [320.5, 50] is outside the 320 x 200 image"),
        ({"clicks": [[10, -1]]}, "outside the 320 x 200 image"),
        ({"clicks": [[10, 10]] * (MAX_CLICKS + 1)}, "at most 10 items"),
        ({"clicks": [[10]]}, "at least 2 items"),
        ({"clicks": [["10", 10]]}, "Input should be a valid number"),
        ({"clicks": [[True, 10]]}, "Input should be a valid number"),
        ({"clicks": [[10, 10]], "fits": True}, "Extra inputs are not permitted"),
        ({"points": CORNERS}, "a correction answer is"),
        ({"choice": None}, "a correction answer is"),
        ("yes", "a correction answer is"),
        ({"cells": [1]}, "a correction answer is"),
    ],
)
def test_a_correction_refuses_clicks_outside_the_image_too_many_or_another_form(
    correcting, correcting_client, value, says
):
    project, _, _ = correcting
    auth = open_session(correcting_client, project)
    task = next_of_kind(correcting_client, auth, "correct")
    response = answer(correcting_client, auth, task, value)
    assert response.status_code == 422 and says in response.text, response.text
    assert stored(project, task) is None


@pytest.mark.parametrize("dispatcher", ["memory", "database"])
def test_both_dispatchers_refuse_a_click_outside_the_image(correcting, dispatcher):
    project, _, correction = correcting
    planner, worker, (task,) = leased_to_one_worker(project, dispatcher, 1)
    assert (task.task_id, task.kind) == (correction, "correct")
    for wrong, says in (
        ({"clicks": [[5, 5], [5, HEIGHT + 1]]}, "outside the 320 x 200 image"),
        ({"clicks": [[5, 5]] * (MAX_CLICKS + 1)}, "at most 10 clicks"),
        ({"choice": 0}, "a correction answer is"),
    ):
        with pytest.raises(AnswerRejected, match=says):
            planner.submit(worker, task.task_id, wrong, client_id="bad")
    assert not planner.submit(worker, task.task_id, {"clicks": [[5, 5], [WIDTH, 0]]}, client_id="x").duplicate


def test_the_rules_check_clicks_against_the_image_where_its_size_is_given():
    assert validate_answer("correct", {"clicks": []}, image_size=(WIDTH, HEIGHT)) == {"clicks": []}
    assert validate_answer("correct", {"clicks": [[WIDTH + 5, 0]]}) == {"clicks": [[325.0, 0.0]]}
    for value in ({"clicks": [[WIDTH + 5, 0]]}, {"clicks": [[1, float("inf")]]}, {"clicks": [[1, True]]}):
        with pytest.raises(AnswerRejected):
            validate_answer("correct", value, image_size=(WIDTH, HEIGHT))


def test_the_correction_example_clicks_on_the_part_of_the_object_its_outline_leaves_out():
    import cv2

    from crowdpatch.server import examples

    x, y = examples.correct_click()
    assert examples.scene().target[y, x]
    for outline in examples.pick_outlines(1):
        assert cv2.pointPolygonTest(np.array(outline, np.float32), (x, y), False) < 0
    (u, v), view = examples.correct_marks()[0], examples.pick_view()
    assert 0 < u < 100 and 0 < v < 100 and abs(view.x0 + u / 100 * view.width - x) < 1
