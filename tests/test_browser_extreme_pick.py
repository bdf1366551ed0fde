"""Extreme-point, pick and correction questions answered in a real headless Chromium (Debian's), against the real
server."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from helpers.browser import skip_without_chromium

skip_without_chromium()
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("uvicorn")

from crowdpatch.crowd.kinds import question_text  # noqa: E402
from crowdpatch.masks.candidates import CROP_SALIENCY, EDGES, GRABCUT  # noqa: E402
from crowdpatch.server.tokens import make_invite  # noqa: E402
from crowdpatch.store.models import AnswerRow  # noqa: E402
from helpers.extreme_pick import (  # noqa: E402
    ask_correct,
    ask_correction_only,
    ask_extreme,
    ask_pick,
    close_tasks,
    image_ids,
    scene_extreme_points,
    unproposed_project,
)
from helpers.live_server import LiveServer  # noqa: E402

expect = playwright_api.expect

PHONE = {"width": 390, "height": 760}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture
def served(tmp_path, landscape_photos):
    """A horse project serving one extreme question on photo 0, and a pick among three outlines of the horse of
    photo 1 (photo 0 mirrored), whose points were clicked before.

    The two are on different photos, as a worker's open questions are: the pick of a photo follows its points,
    and once a pick is answered the image's questions go on without its points' question.
    """

    def configure(config) -> None:
        config.server.answers_per_session = 5

    project = unproposed_project(tmp_path / "horses", landscape_photos, configure)
    first, second = image_ids(project)[:2]
    extreme = ask_extreme(project, first)
    top, bottom, left, right = ([319 - x, y] for x, y in scene_extreme_points())  # as mirrored
    clicked = ask_extreme(project, second)
    close_tasks(project, clicked)
    pick = ask_pick(project, clicked, [top, bottom, right, left], [CROP_SALIENCY, GRABCUT, EDGES])
    server = LiveServer(project)
    yield server, extreme, pick
    server.stop()
    project.close()


def start(page, server: LiveServer, worker: str) -> None:
    invite = make_invite(server.project.config.server.invite_secret, server.project.uid, "lab")
    page.goto(f"{server.url}/w/{server.project.config.name}?invite={invite}&worker={worker}")
    page.get_by_role("button", name="Start").click()


def stored(server: LiveServer, task_id: int):
    with server.project.sessions() as session:
        return session.scalar(select(AnswerRow.value).where(AnswerRow.task_id == task_id))


def photo_position(page, point: list[float]) -> tuple[float, float]:
    """Where image pixel ``point`` of the 320 x 200 photo is on the page (inside the picture's 1 px border)."""
    box = page.locator("#main").bounding_box()
    return box["x"] + 1 + point[0] / 320 * (box["width"] - 2), box["y"] + 1 + point[1] / 200 * (box["height"] - 2)


def answer_both(page, extreme: int, pick: int, answer_extreme, answer_pick) -> None:
    """Answer the two questions in the order they are handed out (the planner's kinds say which comes first)."""
    for _ in range(2):
        page.wait_for_function(
            "document.getElementById('frame').dataset.taskId"
            " && document.body.dataset.shown === document.getElementById('frame').dataset.taskId"
        )
        task = int(page.locator("#frame").get_attribute("data-task-id"))
        assert task in (extreme, pick)
        (answer_extreme if task == extreme else answer_pick)()
        page.wait_for_function(f"document.getElementById('frame').dataset.taskId !== '{task}'")


def test_a_worker_clicks_the_four_ends_and_picks_the_outline_that_fits(served, page, screenshots):
    server, extreme, pick = served
    page.set_viewport_size(DESKTOP)
    start(page, server, "desk")
    ends = scene_extreme_points()

    def click_the_ends() -> None:
        expect(page.locator("#question")).to_have_text(question_text("extreme", "horse"))
        submit = page.get_by_role("button", name=re.compile("^Submit"))
        for point, end in zip(ends, ("top", "bottom", "left", "right")):
            expect(submit).to_be_disabled()
            expect(page.locator("#extreme-count")).to_contain_text(f"{end}most point")  # asked for in order
            page.mouse.click(*photo_position(page, point))
        expect(page.locator("#marks .mark span")).to_have_text(["T", "B", "L", "R"])
        expect(page.locator("#marks .mark")).to_have_count(4)
        expect(page.locator("#extreme-count")).to_have_text(re.compile("^4 of 4"))
        page.mouse.click(*photo_position(page, [10, 10]))  # a fifth click places nothing
        expect(page.locator("#marks .mark")).to_have_count(4)
        page.screenshot(path=screenshots / "extreme-1280.png", full_page=True)
        submit.click()

    def click_the_second_panel() -> None:
        expect(page.locator("#question")).to_have_text(question_text("pick", "horse"))
        panels = page.locator("#choices .choice")
        expect(panels).to_have_count(3)
        first, second = panels.nth(0).bounding_box(), panels.nth(1).bounding_box()
        assert first["y"] == second["y"] and first["x"] + first["width"] <= second["x"]  # side by side
        page.screenshot(path=screenshots / "pick-1280.png", full_page=True)
        panels.nth(1).click()

    answer_both(page, extreme, pick, click_the_ends, click_the_second_panel)
    expect(page.locator("#counter")).to_have_text(re.compile(r"^2 / 5"))
    points = stored(server, extreme)["points"]
    assert len(points) == 4
    for (x, y), (ex, ey) in zip(points, ends):
        assert abs(x - ex) < 2 and abs(y - ey) < 2
    assert stored(server, pick) == {"choice": 1}


def test_on_a_phone_points_are_tapped_undone_and_none_fits_is_an_answer(served, browser, screenshots):
    server, extreme, pick = served
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    start(page, server, "phone")

    def tap_the_points() -> None:
        for point in ([100, 40], [120, 180], [30, 120], [300, 90]):
            page.touchscreen.tap(*photo_position(page, point))
        expect(page.locator("#marks .mark")).to_have_count(4)
        page.get_by_role("button", name=re.compile("^Undo point")).click()
        page.touchscreen.tap(*photo_position(page, [290, 95]))
        expect(page.locator("#marks .mark")).to_have_count(4)
        page.screenshot(path=screenshots / "extreme-390.png", full_page=True)
        page.get_by_role("button", name=re.compile("^Submit")).click()

    def none_fits() -> None:
        page.screenshot(path=screenshots / "pick-390.png", full_page=True)
        for panel in page.locator("#choices .choice").all():
            box = panel.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]  # no sideways scrolling
        page.get_by_role("button", name=re.compile("^None fits")).click()

    answer_both(page, extreme, pick, tap_the_points, none_fits)
    expect(page.locator("#counter")).to_have_text(re.compile(r"^2 / 5"))
    context.close()
    points = stored(server, extreme)["points"]
    assert len(points) == 4
    for (x, y), (tx, ty) in zip(points, ([100, 40], [120, 180], [30, 120], [290, 95])):
        assert abs(x - tx) < 2 and abs(y - ty) < 2
    assert stored(server, pick) == {"choice": None}


def test_not_here_and_the_number_keys_answer(served, page):
    server, extreme, pick = served
    page.set_viewport_size(DESKTOP)
    start(page, server, "keys")
    answer_both(
        page,
        extreme,
        pick,
        lambda: page.get_by_role("button", name="Not here").click(),
        lambda: page.keyboard.press("1"),
    )
    expect(page.locator("#counter")).to_have_text(re.compile(r"^2 / 5"))
    assert stored(server, extreme) == {"not_here": True}
    assert stored(server, pick) == {"choice": 0}


def test_the_instructions_of_a_precise_project_show_its_three_screens_answered(
    tmp_path, landscape_photos, page, screenshots
):
    def precise(config) -> None:
        config.crowd.planner = "precise"

    project = unproposed_project(tmp_path / "horses", landscape_photos, precise)
    server = LiveServer(project)
    try:
        for name, viewport in (("1280", DESKTOP), ("390", PHONE)):
            page.set_viewport_size(viewport)
            invite = make_invite(project.config.server.invite_secret, project.uid, "lab")
            page.goto(f"{server.url}/w/{project.config.name}?invite={invite}")
            expect(page.get_by_text(question_text("extreme", "horse")).first).to_be_visible()
            expect(page.locator(".example .mark")).to_have_count(4 + 1)  # the four ends, the correction's click
            expect(page.locator(".example .choice img")).to_have_count(2)
            expect(page.get_by_text(question_text("correct", "horse"))).to_be_visible()
            expect(page.locator(".example .marks.errors .mark")).to_have_count(1)
            page.wait_for_function(
                "[...document.querySelectorAll('.example img')].every((img) => img.complete && img.naturalWidth > 0)"
            )
            page.screenshot(path=screenshots / f"instructions-precise-{name}.png", full_page=True)
    finally:
        server.stop()
        project.close()


# -- corrections: clicks on where the outline is wrong -----------------------------------------


@pytest.fixture
def correcting(tmp_path, landscape_photos):
    """A horse project whose open questions are two rounds of correcting photo 0's GrabCut outline (its extreme
    points and pick decided)."""

    def configure(config) -> None:
        config.server.answers_per_session = 5

    project = unproposed_project(tmp_path / "horses", landscape_photos, configure)
    pick, first = ask_correction_only(project, image_ids(project)[0], GRABCUT)
    second = ask_correct(project, pick, GRABCUT, [[]])
    server = LiveServer(project)
    yield server, first, second
    server.stop()
    project.close()


def shown_task(page) -> dict:
    """The task on screen, once its picture is shown (as the page holds it: id, kind, view_box...)."""
    page.wait_for_function(
        "document.getElementById('frame').dataset.taskId"
        " && document.body.dataset.shown === document.getElementById('frame').dataset.taskId"
    )
    return page.evaluate(
        "({ id: Number(crowdpatch.current.task_id), kind: crowdpatch.current.kind, view: crowdpatch.current.view_box })"
    )


def view_position(page, view: list[int], point: list[float]) -> tuple[float, float]:
    """Where image pixel ``point`` is on the page, in a picture of ``view`` (inside the picture's 1 px border)."""
    box = page.locator("#main").bounding_box()
    x0, y0, x1, y1 = view
    u, v = (point[0] - x0) / (x1 - x0), (point[1] - y0) / (y1 - y0)
    return box["x"] + 1 + u * (box["width"] - 2), box["y"] + 1 + v * (box["height"] - 2)


def inside(view: list[int], u: float, v: float) -> list[float]:
    """The image pixel at ``u``, ``v`` (shares of the width and height) of ``view``."""
    x0, y0, x1, y1 = view
    return [x0 + u * (x1 - x0), y0 + v * (y1 - y0)]


def close_to(clicks: list[list[float]], wanted: list[list[float]]) -> bool:
    return len(clicks) == len(wanted) and all(
        abs(x - wx) < 2 and abs(y - wy) < 2 for (x, y), (wx, wy) in zip(clicks, wanted)
    )


def test_a_worker_clicks_two_wrong_places_then_answers_fits_by_key(correcting, page, screenshots):
    server, first, second = correcting
    page.set_viewport_size(DESKTOP)
    start(page, server, "desk")
    task = shown_task(page)
    assert (task["id"], task["kind"]) == (first, "correct")
    expect(page.locator("#question")).to_have_text(question_text("correct", "horse"))
    submit, fits = (
        page.get_by_role("button", name=re.compile("^Submit")),
        page.get_by_role("button", name=re.compile("^Fits")),
    )
    expect(submit).to_be_disabled()
    wanted = [inside(task["view"], 0.8, 0.3), inside(task["view"], 0.35, 0.55)]
    for point in wanted:
        page.mouse.click(*view_position(page, task["view"], point))
    expect(page.locator("#marks.errors .mark")).to_have_count(2)
    expect(page.locator("#marks .mark span")).to_have_text(["1", "2"])
    expect(page.locator("#correct-count")).to_have_text(re.compile("^2 clicks"))
    expect(submit).to_be_enabled()
    expect(fits).to_be_disabled()  # clicks placed: the outline does not fit
    page.screenshot(path=screenshots / "correct-1280.png", full_page=True)
    submit.click()
    task = shown_task(page)
    assert task["id"] == second
    expect(page.locator("#marks .mark")).to_have_count(0)
    page.keyboard.press("f")
    expect(page.locator("#counter")).to_have_text(re.compile(r"^2 / 5"))
    assert close_to(stored(server, first)["clicks"], wanted)
    assert stored(server, second) == {"clicks": []}


def test_on_a_phone_clicks_are_tapped_undone_and_fits_is_an_answer(correcting, browser, screenshots):
    server, first, second = correcting
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    start(page, server, "phone")
    task = shown_task(page)
    assert task["id"] == first
    wanted = [inside(task["view"], 0.2, 0.7), inside(task["view"], 0.75, 0.25)]
    for point in wanted + [inside(task["view"], 0.5, 0.5)]:
        page.touchscreen.tap(*view_position(page, task["view"], point))
    expect(page.locator("#marks .mark")).to_have_count(3)
    page.get_by_role("button", name=re.compile("^Undo click")).click()
    expect(page.locator("#marks .mark")).to_have_count(2)
    page.screenshot(path=screenshots / "correct-390.png", full_page=True)
    frame = page.locator("#frame").bounding_box()
    assert frame["x"] >= 0 and frame["x"] + frame["width"] <= PHONE["width"]  # no sideways scrolling
    page.get_by_role("button", name=re.compile("^Submit")).click()
    assert shown_task(page)["id"] == second
    page.get_by_role("button", name=re.compile("^Fits")).click()
    expect(page.locator("#counter")).to_have_text(re.compile(r"^2 / 5"))
    context.close()
    assert close_to(stored(server, first)["clicks"], wanted)
    assert stored(server, second) == {"clicks": []}
