"""The worker page and the dashboard in a real headless Chromium (Debian's), against the real server."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher  # noqa: E402
from crowdpatch.crowd.questions import add_polygon_tasks_for_images  # noqa: E402
from crowdpatch.server.app import create_app  # noqa: E402
from crowdpatch.server.platforms import register_worker  # noqa: E402
from crowdpatch.server.tokens import make_invite  # noqa: E402
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow, WorkerRow  # noqa: E402

expect = playwright_api.expect


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": ["--disable-gpu", "--disable-quic"]}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Screenshots to look at: ``CROWDPATCH_SCREENSHOTS`` when set, else a pytest temp folder."""
    folder = Path(os.environ.get("CROWDPATCH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class LiveServer:
    def __init__(self, project):
        self.project = project
        config = uvicorn.Config(create_app(project), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def verify_all_but_one_image(project) -> None:
    """Two helpers say "yes" to every verification question but those of the last image, so patch questions exist."""
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    with project.sessions() as session:
        last = session.scalar(select(ImageRow.id).order_by(ImageRow.id.desc()).limit(1))
        tasks = session.scalars(select(TaskRow.id).where(TaskRow.kind == "verify", TaskRow.image_id != last)).all()
    for name in ("helper-1", "helper-2"):
        worker = register_worker(project.sessions, project.id, "local", name, {})
        for task_id in tasks:
            with project.sessions.begin() as session:
                session.add(LeaseRow(task_id=task_id, worker_id=worker.id, expires_at=time.time() + 60, leased_at=time.time()))
            planner.submit(worker.id, task_id, "yes", client_id=f"{name}-{task_id}", client_ms=1200)


@pytest.fixture
def live(make_project):
    servers: list[LiveServer] = []

    def start(presentation: str = "single", answers: int = 7, planner: str = "fixed") -> LiveServer:
        def configure(config):
            config.crowd.gold_rate = 0.0
            config.patches.presentation = presentation
            config.server.answers_per_session = answers
            config.crowd.planner = planner

        project = make_project(n_images=3, size=64, configure=configure)
        verify_all_but_one_image(project)
        server = LiveServer(project)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def shown_task(page) -> str:
    page.wait_for_function("document.getElementById('frame').dataset.taskId && document.body.dataset.shown === document.getElementById('frame').dataset.taskId")
    return page.locator("#frame").get_attribute("data-task-id")


def test_a_prolific_worker_answers_undoes_and_is_redirected_with_the_completion_code(live, page, screenshots):
    server = live()
    code = server.project.config.server.prolific_completion_code
    page.route("https://app.prolific.com/**", lambda route: route.fulfill(body="prolific: submission complete"))
    page.goto(f"{server.url}/w/{server.project.config.name}?PROLIFIC_PID=pp1&STUDY_ID=st1&SESSION_ID=se1")
    expect(page.get_by_role("heading", name="Instructions")).to_be_visible()
    page.screenshot(path=screenshots / "worker-instructions.png", full_page=True)
    page.get_by_role("button", name="Start").click()
    kinds = []
    first = shown_task(page)
    kinds.append(page.locator("#frame").get_attribute("data-kind"))
    page.screenshot(path=screenshots / "worker-first-task.png", full_page=True)
    page.keyboard.press("y")
    second = shown_task(page)
    assert second != first
    expect(page.locator("#counter")).to_have_text(re.compile(r"^1 / 7"))
    page.keyboard.press("u")  # undo: the first task comes back
    page.wait_for_function(f"document.getElementById('frame').dataset.taskId === '{first}'")
    expect(page.locator("#counter")).to_have_text(re.compile(r"^0 / 7"))
    page.get_by_role("button", name=re.compile("^No")).click()  # the mouse, this time
    for i in range(6):
        task = shown_task(page)
        kinds.append(page.locator("#frame").get_attribute("data-kind"))
        if kinds[-1] == "patch" and "patch-task.png" not in os.listdir(screenshots):
            page.screenshot(path=screenshots / "patch-task.png", full_page=True)
        if i % 2:
            page.keyboard.press("n")
        else:
            page.get_by_role("button", name=re.compile("^Yes")).click()
        if i < 5:
            page.wait_for_function(f"document.getElementById('frame').dataset.taskId !== '{task}'")
    page.wait_for_url(f"https://app.prolific.com/submissions/complete?cc={code}")
    assert {"verify", "patch"} <= set(kinds)
    with server.project.sessions() as session:
        worker = session.scalar(select(WorkerRow).where(WorkerRow.external_id == "pp1"))
        answers = session.scalars(select(AnswerRow).where(AnswerRow.worker_id == worker.id)).all()
        assert len(answers) == 7 and all(a.time_source == "measured" and a.client_ms > 0 for a in answers)
        assert worker.finished_at is not None and worker.attributes["study_id"] == "st1"


def test_an_mturk_preview_shows_the_instructions_and_no_answer_buttons(live, page, screenshots):
    server = live()
    page.goto(f"{server.url}/w/{server.project.config.name}?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1&workerId=")
    expect(page.get_by_text("This is a preview")).to_be_visible()
    assert page.get_by_role("button", name=re.compile("^(Yes|No|Start)")).count() == 0
    page.screenshot(path=screenshots / "mturk-preview.png", full_page=True)


def test_a_polygon_is_drawn_closed_and_stored_with_its_time(live, page, screenshots):
    server = live(answers=1)
    project = server.project
    with project.sessions.begin() as session:
        add_polygon_tasks_for_images(session, project.id, project.config)
    invite = make_invite(project.config.server.invite_secret, "lab")
    page.set_viewport_size({"width": 390, "height": 760})  # a phone
    page.goto(f"{server.url}/w/{project.config.name}?invite={invite}&mode=polygon&worker=drawer")
    page.get_by_role("button", name="Start").click()
    task = shown_task(page)
    box = page.locator("#poly").bounding_box()
    for fx, fy in ((0.2, 0.2), (0.8, 0.25), (0.75, 0.8), (0.3, 0.7)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.keyboard.press("z")  # undo the last point, then put it back
    page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.75 * box["height"])
    page.get_by_role("button", name=re.compile("^Close shape")).click()
    page.screenshot(path=screenshots / "polygon-phone.png", full_page=True)
    page.get_by_role("button", name=re.compile("^Submit")).click()
    expect(page.locator("#code")).not_to_be_empty()
    page.screenshot(path=screenshots / "local-completion.png", full_page=True)
    with project.sessions() as session:
        answer = session.scalar(select(AnswerRow).where(AnswerRow.task_id == int(task)))
        assert session.get(TaskRow, int(task)).kind == "polygon"
        assert len(answer.value["polygon"]) == 4 and answer.client_ms > 0 and answer.time_source == "measured"
        x, y = answer.value["polygon"][0]
        image = session.get(ImageRow, session.get(TaskRow, int(task)).image_id)
        assert 0.1 * image.width < x < 0.3 * image.width and 0.1 * image.height < y < 0.3 * image.height


def test_grid_cells_are_toggled_by_clicks_and_submitted_with_enter(live, page, screenshots):
    server = live(presentation="grid", answers=20)
    page.goto(f"{server.url}/w/{server.project.config.name}?PROLIFIC_PID=g1&STUDY_ID=s&SESSION_ID=s")
    page.route("https://app.prolific.com/**", lambda route: route.fulfill(body="done"))
    page.get_by_role("button", name="Start").click()
    task = shown_task(page)
    while page.locator("#frame").get_attribute("data-kind") != "grid":  # the last image's verification first
        page.keyboard.press("y")
        page.wait_for_function(f"document.getElementById('frame').dataset.taskId !== '{task}'")
        task = shown_task(page)
    cells = page.locator("#grid div")
    for index in (0, 5, 9, 5):  # 5 twice: toggled off again
        cells.nth(index).click()
    page.screenshot(path=screenshots / "grid-task.png", full_page=True)
    answered = int(page.locator("#counter").inner_text().split("/")[0])
    page.keyboard.press("Enter")
    expect(page.locator("#counter")).to_have_text(re.compile(rf"^{answered + 1} /"))
    with server.project.sessions() as session:
        assert session.scalar(select(AnswerRow.value).where(AnswerRow.task_id == int(task))) == {"cells": [0, 9]}


def test_a_boundary_round_locks_the_decided_cells(live, page, screenshots):
    """The adaptive planner's boundary round: only the uncertain cells can be clicked; the answer holds only those."""
    server = live(presentation="grid", answers=40, planner="adaptive")
    active = [5, 6, 9, 10]
    with server.project.sessions.begin() as session:
        region = session.scalar(select(ImageRow).order_by(ImageRow.id)).regions[0]
        round_task = TaskRow(
            project_id=server.project.id, image_id=region.image_id, region_id=region.id, kind="grid", key="grid:boundary-test",
            level=2, box=list(region.box), grid_size=4, votes_wanted=1, spec={"resolution": 4, "active": active},
            reason="boundary round (test)",
        )
        session.add(round_task)
        session.flush()
        round_id = round_task.id
    page.goto(f"{server.url}/w/{server.project.config.name}?PROLIFIC_PID=b1&STUDY_ID=s&SESSION_ID=s")
    page.route("https://app.prolific.com/**", lambda route: route.fulfill(body="done"))  # the round may be the last task
    page.get_by_role("button", name="Start").click()
    task = shown_task(page)
    while task != str(round_id):  # outline checks and the last verification come first: say yes
        assert page.locator("#frame").get_attribute("data-kind") != "grid", "only the round is a grid here"
        page.keyboard.press("y")
        page.wait_for_function(f"document.getElementById('frame').dataset.taskId !== '{task}'")
        task = shown_task(page)
    cells = page.locator("#grid div")
    expect(cells.nth(0)).to_have_class(re.compile("locked"))
    expect(cells.nth(5)).not_to_have_class(re.compile("locked"))
    for index in (0, 5, 15, 10):  # 0 and 15 are locked: clicks do nothing
        cells.nth(index).click()
    page.screenshot(path=screenshots / "boundary-round.png", full_page=True)
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 10
    while True:
        with server.project.sessions() as session:
            stored = session.scalar(select(AnswerRow.value).where(AnswerRow.task_id == round_id))
        if stored is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stored == {"cells": [5, 10]}


def test_the_dashboard_shows_answers_workers_and_mask_previews(live, page, screenshots):
    server = live()
    key = server.project.config.server.effective_api_key()
    page.goto(f"{server.url}/admin/{server.project.config.name}?key={key}")
    expect(page.locator("#workers")).to_contain_text("helper-1")
    expect(page.locator("#progress")).to_contain_text("answers")
    expect(page.locator("#previews img").first).to_be_visible()
    page.get_by_role("button", name="Make links").click()
    expect(page.locator("#links")).to_contain_text("PROLIFIC_PID")
    page.screenshot(path=screenshots / "dashboard.png", full_page=True)
    page.goto(f"{server.url}/admin/{server.project.config.name}?key=wrong")
    expect(page.get_by_label("API key")).to_be_visible()
