"""Polygon answers become masks beside the patch masks, judged against ground truth like them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import select

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.questions import add_polygon_tasks_for_images
from crowdpatch.datasets import load_mask
from crowdpatch.masks.build import build_masks
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.masks.polygons import combine_polygons, fill_polygon
from crowdpatch.server.app import create_app
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.models import ImageRow, MaskRow
from crowdpatch.summary import summarize


@given(st.integers(0, 30), st.integers(0, 30), st.integers(1, 30), st.integers(1, 30))
def test_a_rectangle_along_pixel_edges_fills_exactly_its_pixels(x, y, w, h):
    width, height = 64, 48
    mask = fill_polygon([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], width, height)
    expected = np.zeros((height, width), dtype=bool)
    expected[y : y + h, x : x + w] = True
    assert np.array_equal(mask, expected)


def test_a_triangle_covers_its_area_up_to_its_outline():
    mask = fill_polygon([[0, 0], [40, 0], [0, 40]], 40, 40)
    assert abs(int(mask.sum()) - 800) <= 40  # at most the pixels its hypotenuse crosses
    assert mask[0, 0] and not mask[39, 39]


def test_several_polygons_of_one_image_keep_the_pixels_half_of_them_draw():
    a = fill_polygon([[0, 0], [4, 0], [4, 4], [0, 4]], 8, 8)
    b = fill_polygon([[2, 0], [6, 0], [6, 4], [2, 4]], 8, 8)
    c = fill_polygon([[4, 4], [8, 4], [8, 8], [4, 8]], 8, 8)
    assert np.array_equal(combine_polygons([a, b]), a | b)
    assert np.array_equal(combine_polygons([a, b, c]), a & b)


def test_polygon_answers_are_exported_beside_the_patch_masks_with_their_iou(make_project):
    def polygons_only(config) -> None:
        config.crowd.gold_rate = 0.0

    project = make_project(n_images=3, size=64, configure=polygons_only)
    with project.sessions.begin() as session:
        add_polygon_tasks_for_images(session, project.id, project.config)
    planner = DatabaseDispatcher(project.sessions, project.id, project.config)
    drawer = register_worker(project.sessions, project.id, "local", "drawer", {}).id
    expected: dict[int, float] = {}
    while (task := planner.next_task(drawer, mode="polygon")) is not None:
        with project.sessions() as session:
            image = session.get(ImageRow, task.image_id)
            gt = load_mask(Path(image.mask_path), (image.width, image.height))
        rows, cols = np.nonzero(gt)
        # The object's bounding box, drawn along pixel edges: its IoU with GT is known independently.
        box = [
            [cols.min(), rows.min()],
            [cols.max() + 1, rows.min()],
            [cols.max() + 1, rows.max() + 1],
            [cols.min(), rows.max() + 1],
        ]
        drawn = np.zeros_like(gt, dtype=bool)
        drawn[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        expected[task.image_id] = mask_iou(drawn, gt)
        planner.submit(
            drawer,
            task.task_id,
            {"polygon": [[float(x), float(y)] for x, y in box]},
            client_id=f"p{task.task_id}",
            client_ms=60_000,
        )
    assert len(expected) == 3
    stats = build_masks(project, ("png",))
    with project.sessions() as session:
        rows = session.execute(
            select(MaskRow.image_id, MaskRow.file, MaskRow.iou).where(MaskRow.source == "polygon")
        ).all()
        names = {image.id: Path(image.path).stem for image in session.scalars(select(ImageRow))}
    assert {image_id: iou for image_id, _, iou in rows} == expected
    for image_id, file, _ in rows:
        assert Path(file) == project.path("masks", "polygon", f"{names[image_id]}.png")
        assert np.asarray(Image.open(file)).max() == 255
    summary = summarize(project, stats)
    assert summary["polygon_masks"] == 3
    assert abs(summary["mask_iou"]["polygon"] - sum(expected.values()) / 3) < 1e-9


def test_the_export_endpoint_writes_polygon_masks_too(make_project):
    project = make_project(n_images=2, size=64)
    with TestClient(create_app(project)) as client:
        key = {"X-API-Key": project.config.server.effective_api_key()}
        base = f"/api/v1/projects/{project.config.name}"
        assert client.post(f"{base}/polygon-tasks", headers=key).json()["created"] == 2
        token = client.post(
            f"{base}/sessions",
            json={"platform": "prolific", "worker_id": "d", "study_id": "s", "session_id": "x", "mode": "polygon"},
        ).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        body = {
            "task_id": task["task_id"],
            "answer": {"polygon": [[0, 0], [32, 0], [32, 32], [0, 32]]},
            "client_id": "p",
            "client_ms": 5000,
        }
        assert client.post("/api/v1/answers", json=body, headers=auth).status_code == 201
        summary = client.post(f"{base}/export", json={"formats": ["png"]}, headers=key).json()["summary"]
    assert summary["polygon_masks"] == 1
    (written,) = project.path("masks", "polygon").glob("*.png")
    assert (np.asarray(Image.open(written)) > 0).sum() == 32 * 32
