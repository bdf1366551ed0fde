"""What a worker and a requester meet, through the real ASGI app: refusal pages titled by what happened,
the completion code of a stopped worker, pictures drawn at the size shown, mask previews over the photo."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from crowdpatch.boxes import Box
from crowdpatch.server import images
from crowdpatch.server.app import create_app
from crowdpatch.server.tokens import WorkerSession, issue_session, make_invite
from crowdpatch.store.models import ImageRow


def stopped_after_three(config) -> None:
    """Every answer is 'too fast' (under a minute) and three of them stop a worker."""
    config.crowd.gold_rate = 0.0
    config.crowd.too_fast_min_answers = 3
    config.crowd.min_seconds_per_answer = 60.0
    config.server.answers_per_session = 10


@pytest.fixture
def served(make_project):
    def start(configure=stopped_after_three):
        project = make_project(n_images=3, size=64, configure=configure)
        client = TestClient(create_app(project))
        clients.append(client)
        return project, client

    clients: list[TestClient] = []
    yield start
    for client in clients:
        client.close()


def api_key(project) -> dict[str, str]:
    return {"X-API-Key": project.config.server.effective_api_key()}


def open_session(client, project, **body) -> dict[str, str]:
    response = client.post(f"/api/v1/projects/{project.config.name}/sessions", json=body)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def answer_three(client, auth) -> None:
    for i in range(3):
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        stored = client.post(
            "/api/v1/answers",
            headers=auth,
            json={"task_id": task["task_id"], "answer": "yes", "client_id": f"c{i}", "client_ms": 900},
        )
        assert stored.status_code == 201


def local_code_on_dashboard(client, project, worker: str) -> str:
    rows = client.get(f"/api/v1/projects/{project.config.name}/dashboard", headers=api_key(project)).json()["workers"]
    return next(row["completion_code"] for row in rows if row["worker"] == worker)


# -- refusals ---------------------------------------------------------------------------------------


def test_a_worker_page_without_an_invite_says_an_invite_is_needed_and_how_to_get_one(served):
    project, client = served()
    page = client.get(f"/w/{project.config.name}")
    assert page.status_code == 403
    assert "<title>Invite needed</title>" in page.text and ">Invite needed</h2>" in page.text
    assert '<section id="refused">' in page.text and '<section id="intro" hidden>' in page.text
    assert "crowdpatch serve prints a ready invite link" in page.text
    refused = client.post(
        f"/api/v1/projects/{project.config.name}/sessions", json={"platform": "local", "worker_id": "w"}
    )
    assert refused.status_code == 403
    assert refused.json()["reason"] == "invite_needed" and refused.json()["title"] == "Invite needed"
    cut = client.post(
        f"/api/v1/projects/{project.config.name}/sessions",
        json={"platform": "local", "worker_id": "w", "invite": "lab.wrong"},
    )
    assert cut.json()["reason"] == "invite_needed" and "not valid" in cut.json()["detail"]


def test_an_invited_worker_page_shows_the_instructions_and_an_unknown_study_says_so(served):
    project, client = served()
    invite = make_invite(project.config.server.invite_secret, project.uid, "lab")
    page = client.get(f"/w/{project.config.name}?invite={invite}")
    assert page.status_code == 200 and ">Instructions</h2>" in page.text and "data-refused" not in page.text
    missing = client.get("/w/no-such-study?invite=x")
    assert missing.status_code == 404 and "<title>Study not found</title>" in missing.text


def test_an_expired_session_is_refused_as_expired(served):
    project, client = served()
    expired = issue_session(
        project.config.server.session_secret, WorkerSession(1, project.uid, "k", "prolific", "patch", time.time() - 1)
    )
    response = client.get("/api/v1/tasks/next", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["reason"] == "session_expired" and response.json()["title"] == "Session expired"


def test_a_stopped_prolific_worker_is_told_so_and_gets_no_code_unless_the_study_pays(served):
    project, client = served()
    auth = open_session(client, project, platform="prolific", worker_id="p1", study_id="s", session_id="x")
    answer_three(client, auth)
    stopped = client.get("/api/v1/tasks/next", headers=auth)
    assert stopped.status_code == 403
    body = stopped.json()
    assert body["reason"] == "stopped" and body["title"] == "You have been stopped" and body["code_offered"] is False
    refused = client.post("/api/v1/sessions/complete", headers=auth)
    assert refused.status_code == 403 and refused.json()["reason"] == "stopped"

    project.config.server.pay_stopped_workers = True
    offered = client.get("/api/v1/tasks/next", headers=auth).json()
    assert offered["code_offered"] is True and "completion code" in offered["detail"]
    done = client.post("/api/v1/sessions/complete", headers=auth)
    assert done.status_code == 200 and done.json()["code"] == project.config.server.prolific_completion_code


def test_a_stopped_local_worker_gets_the_code_the_dashboard_lists(served):
    project, client = served()
    invite = make_invite(project.config.server.invite_secret, project.uid, "local")
    auth = open_session(client, project, platform="local", worker_id="lab-7", invite=invite)
    answer_three(client, auth)
    stopped = client.get("/api/v1/tasks/next", headers=auth).json()
    assert stopped["reason"] == "stopped" and stopped["code_offered"] is True
    code = client.post("/api/v1/sessions/complete", headers=auth).json()["code"]
    assert code == local_code_on_dashboard(client, project, "lab-7")
    rows = client.get(f"/api/v1/projects/{project.config.name}/dashboard", headers=api_key(project)).json()["workers"]
    assert next(row["stopped_reason"] for row in rows if row["worker"] == "lab-7") == "too_fast"


# -- pictures ---------------------------------------------------------------------------------------


def jpeg_size(response) -> tuple[int, int]:
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    return Image.open(io.BytesIO(response.content)).size


def test_task_pictures_are_drawn_at_the_width_they_are_shown_at(served):
    project, client = served(lambda config: setattr(config.crowd, "gold_rate", 0.0))
    auth = open_session(client, project, platform="prolific", worker_id="p1", study_id="s", session_id="x")
    task = client.get("/api/v1/tasks/next", headers=auth).json()
    assert task["kind"] == "verify"
    width, height = jpeg_size(client.get(task["image_url"] + "&px=720&dpr=2"))
    assert width == 1440 and height == round(1440 * task["image_height"] / task["image_width"])
    assert jpeg_size(client.get(task["context_url"] + "&px=200&dpr=1.5"))[0] == 300
    assert jpeg_size(client.get(task["image_url"]))[0] == images.MAIN_CSS_PX  # a client that does not say


def test_a_small_patch_is_shown_in_its_surroundings_and_a_grid_region_with_a_margin():
    small = Box(400, 300, 430, 320)
    view = images.view_box("patch", small, 800, 600)
    assert view.contains(small) and (view.width, view.height) == (images.MIN_VIEW_SOURCE_PX, images.MIN_VIEW_SOURCE_PX)
    assert abs((view.x0 + view.x1) / 2 - 415) <= 1 and abs((view.y0 + view.y1) / 2 - 310) <= 1  # centred on the patch
    corner = images.view_box("patch", Box(0, 0, 30, 20), 800, 600)
    assert corner == Box(0, 0, images.MIN_VIEW_SOURCE_PX, images.MIN_VIEW_SOURCE_PX)  # kept inside the photo
    region = images.view_box("grid", Box(100, 100, 180, 140), 800, 600)
    assert region == Box(80, 90, 200, 150)  # 1.5 times the region: the cells stay large
    large = Box(0, 0, 500, 400)
    assert images.view_box("patch", large, 800, 600) == large
    assert images.view_box("verify", small, 800, 600) == Box(0, 0, 800, 600)
    assert images.view_box("patch", small, 64, 64) == Box(0, 0, 64, 64)  # a small photo: all of it


def test_a_grid_picture_shows_its_region_in_the_view_the_task_names(photo_project):
    project = photo_project(lambda config: setattr(config.crowd, "gold_rate", 0.0))
    with TestClient(create_app(project)) as client:
        for worker in ("v1", "v2"):  # two agreeing "yes" decide a verification: the regions get their grids
            auth = open_session(client, project, platform="prolific", worker_id=worker, study_id="s", session_id="x")
            while (leased := client.get("/api/v1/tasks/next", headers=auth)).status_code == 200 and (
                task := leased.json()
            )["kind"] == "verify":
                client.post(
                    "/api/v1/answers",
                    headers=auth,
                    json={
                        "task_id": task["task_id"],
                        "answer": "yes",
                        "client_id": f"{worker}-{task['task_id']}",
                        "client_ms": 900,
                    },
                )
        assert task["kind"] == "grid"
        view, box = Box.from_list(task["view_box"]), Box.from_list(task["box"])
        assert view.contains(box) and view == images.view_box("grid", box, task["image_width"], task["image_height"])
        width, height = jpeg_size(client.get(task["image_url"] + "&px=600"))
    assert width == 600 and abs(height - 600 * view.height / view.width) <= 1


def profile_across(picture: Image.Image, row: int, x0: int, x1: int) -> list[str]:
    """Each pixel of a row as 'yellow', 'dark' or 'green' (the test scene's background)."""
    names = []
    for r, g, b in np.asarray(picture)[row, x0:x1].astype(int):
        names.append("yellow" if r > 200 and g > 170 and b < 90 else "dark" if r + g + b < 150 else "green")
    return names


def runs(names: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for name in names:
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + 1)
        else:
            out.append((name, 1))
    return out


def test_outlines_are_thick_yellow_on_a_dark_halo_so_they_show_on_foliage():
    foliage = Image.new("RGB", (100, 50), (70, 140, 50))
    box = Box(20, 10, 80, 40)
    drawn = images.render_outlined(foliage, box, [[[20, 10], [79, 10], [79, 39], [20, 39]]], width=400, dpr=1.0)
    across = runs(profile_across(drawn, row=100, x0=40, x1=120))  # the left edge of the outline, at 4x
    assert [name for name, _ in across] == ["green", "dark", "yellow", "dark", "green"]
    _, (_, halo_out), (_, line), (_, halo_in), _ = across
    assert line >= images.OUTLINE_CSS_PX and halo_out >= 2 and halo_in >= 2
    thumb = images.render_context(foliage, Box(40, 20, 60, 30), width=200, dpr=1.0)
    assert [name for name, _ in runs(profile_across(thumb, row=50, x0=60, x1=100))] == [
        "green",
        "dark",
        "yellow",
        "dark",
        "green",
    ]


# -- dashboard --------------------------------------------------------------------------------------


def test_mask_previews_are_the_photo_at_its_aspect_ratio_with_its_name_and_answers(served):
    project, client = served(lambda config: setattr(config.crowd, "gold_rate", 0.0))
    auth = open_session(client, project, platform="prolific", worker_id="p1", study_id="s", session_id="x")
    answer_three(client, auth)
    with project.sessions.begin() as session:  # previews list the images in patch labeling: put all three there
        for row in session.scalars(select(ImageRow)):
            row.stage = "patch"
    previews = client.get(f"/api/v1/projects/{project.config.name}/dashboard", headers=api_key(project)).json()[
        "previews"
    ]
    assert len(previews) == 3 and sum(p["answers"] for p in previews) == 3
    with project.sessions() as session:
        paths = {row.id: row.path for row in session.scalars(select(ImageRow))}
    for preview in previews:
        assert paths[preview["image_id"]].endswith(preview["name"])
        picture = client.get(
            f"/api/v1/projects/{project.config.name}/previews/{preview['image_id']}.jpg?px=220&dpr=2",
            headers=api_key(project),
        )
        assert jpeg_size(picture) == (440, round(440 * preview["height"] / preview["width"]))
