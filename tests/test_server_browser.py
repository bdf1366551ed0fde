"""The worker page and the dashboard in a real headless Chromium (Debian's), against the real server."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from helpers.browser import skip_without_chromium

skip_without_chromium()
playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("uvicorn")

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher  # noqa: E402
from crowdpatch.crowd.questions import add_polygon_tasks_for_images  # noqa: E402
from crowdpatch.server.platforms import register_worker  # noqa: E402
from crowdpatch.server.tokens import make_invite  # noqa: E402
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow, WorkerRow  # noqa: E402
from helpers.live_server import LiveServer  # noqa: E402

expect = playwright_api.expect


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
                session.add(
                    LeaseRow(task_id=task_id, worker_id=worker.id, expires_at=time.time() + 60, leased_at=time.time())
                )
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
    page.wait_for_function(
        "document.getElementById('frame').dataset.taskId"
        " && document.body.dataset.shown === document.getElementById('frame').dataset.taskId"
    )
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
    page.goto(
        f"{server.url}/w/{server.project.config.name}?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H1&workerId="
    )
    expect(page.get_by_text("This is a preview")).to_be_visible()
    assert page.get_by_role("button", name=re.compile("^(Yes|No|Start)")).count() == 0
    page.screenshot(path=screenshots / "mturk-preview.png", full_page=True)


def test_a_worker_with_no_question_to_answer_is_told_why_and_gets_no_code(live, page, screenshots):
    server = live()
    project = server.project  # no polygon question was added: a polygon-mode worker has nothing to answer
    invite = make_invite(project.config.server.invite_secret, project.uid, "lab")
    page.goto(f"{server.url}/w/{project.config.name}?invite={invite}&mode=polygon&worker=idle")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#refused-title")).to_have_text("Nothing answered yet")
    expect(page.locator("#refused-text")).to_contain_text("at least one answer")
    expect(page.locator("#finished")).to_be_hidden()
    page.screenshot(path=screenshots / "no-answers.png", full_page=True)
    with project.sessions() as session:
        worker = session.scalar(select(WorkerRow).where(WorkerRow.external_id == "idle"))
        assert worker is not None and worker.finished_at is None


def test_a_polygon_is_drawn_closed_and_stored_with_its_time(live, page, screenshots):
    server = live(answers=1)
    project = server.project
    with project.sessions.begin() as session:
        add_polygon_tasks_for_images(session, project.id, project.config)
    invite = make_invite(project.config.server.invite_secret, project.uid, "lab")
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
            project_id=server.project.id,
            image_id=region.image_id,
            region_id=region.id,
            kind="grid",
            key="grid:boundary-test",
            level=2,
            box=list(region.box),
            grid_size=4,
            votes_wanted=1,
            spec={"resolution": 4, "active": active},
            reason="boundary round (test)",
        )
        session.add(round_task)
        session.flush()
        round_id = round_task.id
    page.goto(f"{server.url}/w/{server.project.config.name}?PROLIFIC_PID=b1&STUDY_ID=s&SESSION_ID=s")
    page.route(
        "https://app.prolific.com/**", lambda route: route.fulfill(body="done")
    )  # the round may be the last task
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
    expect(page.locator("#as-of")).to_have_text(re.compile(r"figures as of \d+ s ago"))
    expect(page.locator("#previews img").first).to_be_visible()
    page.get_by_role("button", name="Make links").click()
    expect(page.locator("#links")).to_contain_text("PROLIFIC_PID")
    page.screenshot(path=screenshots / "dashboard.png", full_page=True)
    page.goto(f"{server.url}/admin/{server.project.config.name}?key=wrong")
    expect(page.get_by_label("API key")).to_be_visible()


# -- serving a study as a requester meets it ----------------------------------------------------------


def printed_by(log_path: Path, child, until: str, timeout: float = 180) -> str:
    """What the background command has printed once ``until`` appears (it must not exit first)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_path.read_text(encoding="utf-8")
        if until in text:
            return text
        assert child.poll() is None, f"the command exited ({child.returncode}) before printing {until!r}:\n{text}"
        assert time.monotonic() < deadline, f"no {until!r} after {timeout} s:\n{text}"
        time.sleep(0.2)


def answer_by_keys(page, keys: str) -> None:
    """Answer one question per key, each once its picture is on screen."""
    for index, key in enumerate(keys):
        task = shown_task(page)
        page.keyboard.press(key)
        if index < len(keys) - 1:
            page.wait_for_function(f"document.getElementById('frame').dataset.taskId !== '{task}'")


def test_serve_prints_an_invite_link_that_leads_through_three_answers_to_the_code_the_dashboard_lists(
    photo_project, start_cli, page, tmp_path, screenshots
):
    def three_answers(config):
        config.crowd.gold_rate = 0.0
        config.server.answers_per_session = 3

    project = photo_project(three_answers)
    log_path = tmp_path / "serve.log"
    with log_path.open("w", encoding="utf-8") as log:
        child = start_cli("serve", project.directory, "--port", "0", log=log)  # 0: any free port; the links name it
        printed = printed_by(log_path, child, "API key:")
    invite_link = re.search(r"invite link:\s+(\S+)", printed).group(1)
    key = re.search(r"API key:\s+(\S+)", printed).group(1)
    base = invite_link.split("/w/")[0]
    assert not base.endswith(":0") and "?invite=" in invite_link

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(invite_link)
    expect(page.get_by_role("heading", name="Find the horse")).to_be_visible()
    page.get_by_role("button", name="Start").click()
    answer_by_keys(page, "yny")
    expect(page.get_by_role("heading", name="Thank you!")).to_be_visible()
    code = page.locator("#code").inner_text()
    page.screenshot(path=screenshots / "serving-completion-1280.png", full_page=True)

    listed = page.request.get(f"{base}/api/v1/projects/horses/dashboard", headers={"X-API-Key": key}).json()["workers"]
    local = [row for row in listed if row["platform"] == "local"]
    assert len(local) == 1 and local[0]["answers"] == 3
    assert code and code == local[0]["completion_code"]
    child.terminate()


def test_the_worker_page_names_the_target_and_shows_the_photo_as_wide_as_it_fits(photo_project, page, screenshots):
    project = photo_project(lambda config: setattr(config.crowd, "gold_rate", 0.0))
    server = LiveServer(project)
    try:
        invite = make_invite(project.config.server.invite_secret, project.uid, "lab")
        for width, height, ratio in ((1280, 900, 1), (390, 844, 3)):
            context = page.context.browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=ratio
            )
            phone = context.new_page()
            phone.goto(f"{server.url}/w/horses?invite={invite}&worker=viewer-{width}")
            expect(phone.get_by_role("heading", name="Find the horse")).to_be_visible()
            expect(phone).to_have_title("Find the horse")
            phone.get_by_role("button", name="Start").click()
            shown_task(phone)
            shown = phone.evaluate("""() => { const img = document.getElementById('main'), \
box = img.getBoundingClientRect();
                return {width: box.width, bottom: box.bottom, natural: img.naturalWidth, \
page: document.documentElement.scrollWidth}; }""")
            phone.screenshot(path=screenshots / f"serving-worker-task-{width}.png", full_page=True)
            if width == 1280:
                assert shown["width"] >= 720
            else:
                assert shown["width"] >= width - 30
            assert (
                abs(shown["natural"] - round(shown["width"] * ratio)) <= ratio
            )  # drawn by the server at the size shown
            assert shown["bottom"] <= height and shown["page"] <= width  # whole in view, nothing to scroll sideways
            context.close()
    finally:
        server.stop()


def test_the_examples_are_drawn_like_the_tasks_and_grid_lines_have_a_halo(photo_project, page, screenshots):
    from crowdpatch.server.examples import grid_cells_on

    project = photo_project(lambda config: setattr(config.crowd, "gold_rate", 0.0))
    verify_all_but_one_image(project)
    server = LiveServer(project)
    try:
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{server.url}/w/horses?PROLIFIC_PID=ex1&STUDY_ID=s&SESSION_ID=s")
        page.wait_for_function(
            "[...document.querySelectorAll('.example img')].every((img) => img.complete && img.naturalWidth > 0)"
        )
        page.screenshot(path=screenshots / "serving-instructions-1280.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=screenshots / "serving-instructions-390.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        example_cells = page.locator(".example .cells div")
        assert example_cells.count() == project.config.patches.grid_size**2
        on = page.evaluate(
            "[...document.querySelectorAll('.example .cells div.on')].map((cell) => Number(cell.dataset.cell))"
        )
        assert on == grid_cells_on(project.config.patches.grid_size)
        example_lines = page.locator(".example svg.lines path.line").get_attribute("d")

        page.get_by_role("button", name="Start").click()
        task = shown_task(page)
        while page.locator("#frame").get_attribute("data-kind") != "grid":
            page.keyboard.press("y")
            page.wait_for_function(f"document.getElementById('frame').dataset.taskId !== '{task}'")
            task = shown_task(page)
        page.locator("#grid div").nth(9).click()
        page.screenshot(path=screenshots / "serving-grid-1280.png", full_page=True)
        placed = page.evaluate("""() => {
            const frame = document.getElementById('frame').getBoundingClientRect(), \
region = document.getElementById('region').getBoundingClientRect();
            return [(region.left - frame.left) / frame.width, (region.top - frame.top) / frame.height,
                    (region.right - frame.left) / frame.width, (region.bottom - frame.top) / frame.height]; }""")
        leased = page.evaluate("window.crowdpatch.current")
        (vx0, vy0, vx1, vy1), (x0, y0, x1, y1) = leased["view_box"], leased["box"]
        expected = [
            (x0 - vx0) / (vx1 - vx0),
            (y0 - vy0) / (vy1 - vy0),
            (x1 - vx0) / (vx1 - vx0),
            (y1 - vy0) / (vy1 - vy0),
        ]
        assert placed == pytest.approx(expected, abs=0.01)  # the cells lie over the region the picture shows
        assert page.locator("#grid-lines path.line").get_attribute("d") == example_lines  # the same drawing
        widths = page.evaluate("""() => ['halo', 'line'].map((name) =>
            getComputedStyle(document.querySelector('#grid-lines path.' + name)).strokeWidth)""")
        assert widths == ["4px", "2px"]
        assert page.evaluate("getComputedStyle(document.querySelector('#grid-lines path.halo')).stroke").startswith(
            "rgba(0, 0, 0"
        )
    finally:
        server.stop()


def too_fast_stops_after_three(config) -> None:
    config.crowd.gold_rate = 0.0
    config.crowd.too_fast_min_answers = 3
    config.crowd.min_seconds_per_answer = 60.0  # every real answer is "too fast"


def test_a_worker_stopped_by_quality_control_sees_the_stop_page_with_the_code_the_dashboard_lists(
    photo_project, page, screenshots
):
    project = photo_project(too_fast_stops_after_three)
    server = LiveServer(project)
    try:
        invite = make_invite(project.config.server.invite_secret, project.uid, "local")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{server.url}/w/horses?invite={invite}&worker=lab-member-3")
        page.get_by_role("button", name="Start").click()
        answer_by_keys(page, "yyy")
        expect(page.get_by_role("heading", name="You have been stopped")).to_be_visible()
        expect(page).to_have_title("You have been stopped")
        expect(page.locator("#refused-text")).to_contain_text("quality checks")
        expect(page.locator("#stopped-code")).not_to_be_empty()
        page.screenshot(path=screenshots / "serving-stopped-390.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=screenshots / "serving-stopped-1280.png", full_page=True)
        key = project.config.server.effective_api_key()
        listed = page.request.get(f"{server.url}/api/v1/projects/horses/dashboard", headers={"X-API-Key": key}).json()[
            "workers"
        ]
        row = next(row for row in listed if row["worker"] == "lab-member-3")
        assert (
            page.locator("#stopped-code").inner_text() == row["completion_code"] and row["stopped_reason"] == "too_fast"
        )
    finally:
        server.stop()


def test_a_link_without_an_invite_opens_a_page_that_says_so(live, page, screenshots):
    server = live()
    page.goto(f"{server.url}/w/{server.project.config.name}")
    expect(page.get_by_role("heading", name="Invite needed")).to_be_visible()
    expect(page.get_by_text("crowdpatch serve prints a ready invite link")).to_be_visible()
    assert (
        page.get_by_role("button", name="Start").count() == 0
        or not page.get_by_role("button", name="Start").is_visible()
    )
    page.screenshot(path=screenshots / "serving-invite-needed-1280.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=screenshots / "serving-invite-needed-390.png", full_page=True)


def test_the_dashboard_shows_who_was_stopped_long_ids_on_one_line_and_masks_over_their_photos(
    photo_project, page, screenshots
):
    project = photo_project(lambda config: setattr(config.crowd, "gold_rate", 0.0))
    verify_all_but_one_image(
        project
    )  # two helpers (at 1.2 s an answer); from now on answers under a minute stop a worker
    too_fast_stops_after_three(project.config)
    long_id = "5f2b9c1e8a7d4e3f9b0c1d2e" * 3
    server = LiveServer(project)
    try:
        opened = page.request.post(
            f"{server.url}/api/v1/projects/horses/sessions",
            data={"platform": "prolific", "worker_id": long_id, "study_id": "s", "session_id": "x"},
        )
        auth = {"Authorization": f"Bearer {opened.json()['token']}"}
        for index in range(3):
            task = page.request.get(f"{server.url}/api/v1/tasks/next", headers=auth).json()
            value = {"cells": []} if task["kind"] == "grid" else "no"
            stored = page.request.post(
                f"{server.url}/api/v1/answers",
                headers=auth,
                data={"task_id": task["task_id"], "answer": value, "client_id": f"l{index}", "client_ms": 700},
            )
            assert stored.status == 201, stored.text()
        key = project.config.server.effective_api_key()
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{server.url}/admin/horses?key={key}")
            expect(page.locator("#workers th", has_text="stopped by")).to_be_visible()
            row = page.locator("#workers tr", has_text="too_fast")
            expect(row).to_have_count(1)
            cell = row.locator("td.worker")
            assert cell.get_attribute("title") == long_id
            assert cell.evaluate("(td) => td.scrollWidth > td.clientWidth")  # cut with an ellipsis, not wrapped
            heights = page.evaluate(
                "[...document.querySelectorAll('#workers tr')].slice(1).map((tr) => tr.getBoundingClientRect().height)"
            )
            assert max(heights) - min(heights) < 1
            page.wait_for_function(
                "document.querySelectorAll('#previews img').length > 0 && "
                "[...document.querySelectorAll('#previews img')].every((img) => img.complete && img.naturalWidth > 0)"
            )
            ratios = page.evaluate(
                "[...document.querySelectorAll('#previews img')].map((img) => img.naturalWidth / img.naturalHeight)"
            )
            assert all(abs(ratio - 320 / 200) < 0.02 for ratio in ratios)
            captions = page.locator("#previews figcaption").all_inner_texts()
            assert all(re.search(r"photo-\d\.png", text) and re.search(r"\d+ answers", text) for text in captions)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=screenshots / f"serving-dashboard-{width}.png", full_page=True)
    finally:
        server.stop()


def test_a_stopped_prolific_worker_gets_the_way_back_with_the_code_only_where_the_study_pays(
    photo_project, page, screenshots
):
    project = photo_project(too_fast_stops_after_three)
    server = LiveServer(project)
    try:
        for worker, pays in (("unpaid-1", False), ("paid-1", True)):
            project.config.server.pay_stopped_workers = pays
            page.goto(f"{server.url}/w/horses?PROLIFIC_PID={worker}&STUDY_ID=s&SESSION_ID=x")
            page.get_by_role("button", name="Start").click()
            answer_by_keys(page, "nnn")
            expect(page.get_by_role("heading", name="You have been stopped")).to_be_visible()
            back = page.get_by_role("link", name="Return to Prolific with this code")
            if pays:
                code = project.config.server.prolific_completion_code
                expect(page.locator("#stopped-code")).to_have_text(code)
                expect(back).to_have_attribute("href", project.config.server.prolific_complete_url.format(code=code))
                page.screenshot(path=screenshots / "serving-stopped-paid-1280.png", full_page=True)
            else:
                expect(page.locator("#refused-code")).to_be_hidden()
                expect(back).to_be_hidden()
    finally:
        server.stop()
