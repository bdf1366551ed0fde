"""bench/scale.py's synthetic studies are consistent: every image gets its mask, the server counts what was copied."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from crowdpatch.masks.build import build_masks
from crowdpatch.propose import propose
from crowdpatch.server.app import create_app
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale  # noqa: E402 - the bench folder is not a package


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> scale.Template:
    return scale.Template.read(scale.template_study(tmp_path_factory.mktemp("template"), pool=6))


def test_a_copied_study_builds_every_mask_and_the_server_counts_every_row(template, tmp_path):
    study = scale.build_study(template, tmp_path, 20, None, open_share=0.1, images_per_worker=5)
    project = study.project
    assert (study.images, study.open_images) == (20, 16)  # at least 16 images are left to propose
    assert study.answers > 0 and study.questions > 0
    with project.sessions() as session:
        stages = dict(session.execute(select(ImageRow.stage, func.count()).group_by(ImageRow.stage)).all())
        answers = session.scalar(select(func.count()).select_from(AnswerRow))
        questions = session.scalar(select(func.count()).select_from(TaskRow))
    assert stages == {"done": 4, "new": 16}
    assert (answers, questions) == (study.answers, study.questions)

    assert propose(project).processed == 16
    stats = build_masks(project, ("png",))
    assert len(stats) == 20
    assert all((project.path("masks", "soft", f"{s.name}.png")).is_file() for s in stats)
    assert all(s.iou is not None for s in stats[:4])  # the copied images kept their ground truth

    with TestClient(create_app(project)) as client:
        progress = client.get(
            f"/api/v1/projects/{project.config.name}/progress", headers={"X-API-Key": scale.API_KEY}
        ).json()
    with project.sessions() as session:
        proposed_questions = session.scalar(select(func.count()).select_from(TaskRow)) - study.questions
    assert progress["images"]["done"] == 4 and sum(progress["images"].values()) == 20
    assert "new" not in progress["images"]
    assert progress["answers"] == study.answers
    assert sum(q["open"] + q["done"] for q in progress["questions"].values()) == study.questions + proposed_questions


def test_copies_share_workers_without_two_answers_of_one_worker_on_a_question(template, tmp_path):
    study = scale.build_study(template, tmp_path, 40, None, open_share=0.0, images_per_worker=10)
    with study.project.sessions() as session:
        pairs = session.execute(select(AnswerRow.task_id, AnswerRow.worker_id)).all()
    assert len(pairs) == len(set(pairs)) == study.answers
    with study.project.sessions() as session:
        counted = dict(session.execute(select(AnswerRow.worker_id, func.count()).group_by(AnswerRow.worker_id)).all())
        kept = dict(session.execute(select(WorkerRow.id, WorkerRow.answers_given)).all())
    assert kept == {worker: counted.get(worker, 0) for worker in kept}  # what the answer path reads as given
    assert study.workers >= len(template.workers)
