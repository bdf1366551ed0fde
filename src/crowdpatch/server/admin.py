"""The requester's JSON API (``X-API-Key``): progress, dashboard figures, mask previews, exports, links."""

from __future__ import annotations

import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy import select

from crowdpatch.crowd.questions import add_polygon_tasks_for_images
from crowdpatch.csv_export import SafeWriter
from crowdpatch.masks.build import build_masks
from crowdpatch.server import images
from crowdpatch.server.api import DB_INT_MAX
from crowdpatch.server.platforms import worker_link
from crowdpatch.server.schemas import ExportRequest, InviteRequest
from crowdpatch.server.state import Requester, State, check_project
from crowdpatch.server.tokens import make_invite
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow
from crowdpatch.summary import summarize

router = APIRouter(prefix="/api/v1/projects/{project}", dependencies=[Requester])


@router.get("/progress")
def get_progress(
    project: str,
    state: State,
    fresh: Annotated[
        bool, Query(description="Count now (exact, but seconds in a study of 100,000 images) instead of the snapshot.")
    ] = False,
) -> dict:
    """Images per stage, questions open/done per kind, answers.

    The counts are the latest the background refresh made (:mod:`crowdpatch.server.snapshot`, every
    second in a small study, every few times their cost in a large one): ``as_of`` says when (epoch
    seconds), ``stale_seconds`` how long ago. ``fresh=true`` counts now.
    """
    check_project(state, project)
    return state.progress.fresh() if fresh else state.progress.current()


@router.get("/dashboard")
def dashboard(project: str, state: State) -> dict:
    """Everything the dashboard shows (progress, pace and measured times, the worker-quality table, previews).

    The figures are the latest that the background refresh computed (:mod:`crowdpatch.server.snapshot`):
    ``as_of`` says when (epoch seconds), ``stale_seconds`` how long ago, ``compute_seconds`` what they cost.
    """
    check_project(state, project)
    return state.dashboard.current()


@router.get("/masks/{image_id}.png", response_class=Response)
def mask_preview(project: str, image_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)], state: State) -> Response:
    """The soft mask being formed for one image (0-255 PNG)."""
    check_project(state, project)
    with state.project.sessions() as session:
        row = session.get(ImageRow, image_id)
        if row is None or row.project_id != state.project.id:
            raise HTTPException(404, "no such image")
    soft = state.live_masks.builder().image_mask(image_id).soft
    return Response(images.soft_mask_png(soft), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/previews/{image_id}.jpg", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def mask_over_photo(
    project: str,
    image_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    state: State,
    px: Annotated[float, Query(ge=16, le=2048, description="Width shown, in CSS pixels.")] = 240,
    dpr: Annotated[float, Query(ge=1, le=4, description="The screen's device pixels per CSS pixel.")] = 1.0,
) -> Response:
    """The mask being formed for one image, over its photo at the photo's aspect ratio (what the dashboard shows)."""
    check_project(state, project)
    with state.project.sessions() as session:
        row = session.get(ImageRow, image_id)
        if row is None or row.project_id != state.project.id:
            raise HTTPException(404, "no such image")
        path = row.path
    soft = state.live_masks.builder().image_mask(image_id).soft
    return Response(
        images.mask_preview(state.pictures.photos.photo(path), soft, px, dpr),
        media_type="image/jpeg",
        headers={"Cache-Control": "no-store"},
    )


@router.post("/export")
def export(project: str, body: ExportRequest, state: State) -> dict:
    """Aggregate every answer into masks (written to the project's masks/) and return the summary."""
    check_project(state, project)
    stats = build_masks(state.project, body.formats)
    summary = summarize(state.project, stats)
    (state.project.path("summary.json")).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return {"masks": len(stats), "directory": str(state.project.path("masks")), "summary": summary}


@router.get("/answers.csv", response_class=Response)
def answers_csv(project: str, state: State) -> Response:
    """Every answer with its worker, task, value and times; ``worker_row`` tells apart workers under one platform id.

    What workers chose (their id, the answer's JSON) cannot run as a spreadsheet formula (:mod:`crowdpatch.csv_export`).
    """
    check_project(state, project)
    buffer = io.StringIO()
    out = SafeWriter(buffer)
    out.writerow(
        [
            "answer_id",
            "task_id",
            "kind",
            "image_id",
            "worker",
            "platform",
            "value",
            "seconds",
            "time_source",
            "client_ms",
            "answered_at",
            "worker_row",
        ]
    )
    with state.project.sessions() as session:
        for row in session.execute(
            select(
                AnswerRow.id,
                AnswerRow.task_id,
                TaskRow.kind,
                TaskRow.image_id,
                WorkerRow.external_id,
                WorkerRow.platform,
                AnswerRow.value,
                AnswerRow.seconds,
                AnswerRow.time_source,
                AnswerRow.client_ms,
                AnswerRow.answered_at,
                AnswerRow.worker_id,
            )
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(TaskRow.project_id == state.project.id)
            .order_by(AnswerRow.id)
        ):
            values = list(row)
            values[6] = json.dumps(values[6])
            out.writerow(values)
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{project}-answers.csv"'},
    )


@router.post("/invites")
def invite(project: str, body: InviteRequest, state: State, request: Request) -> dict:
    """A local invite and the worker link that carries it."""
    check_project(state, project)
    token = make_invite(state.server.invite_secret, state.project.uid, body.label)
    return {"invite": token, "url": worker_link(str(request.base_url), project, "local", token, body.mode)}


@router.get("/links")
def links(project: str, state: State, request: Request, mode: Literal["patch", "polygon"] = "patch") -> dict:
    """Study links for Prolific (with its placeholders) and the MTurk ExternalQuestion URL."""
    check_project(state, project)
    base = str(request.base_url)
    return {
        "prolific": worker_link(base, project, "prolific", mode=mode),
        "mturk": worker_link(base, project, "mturk", mode=mode),
        "prolific_completion_code": state.server.prolific_completion_code,
    }


@router.post("/polygon-tasks")
def polygon_tasks(project: str, state: State) -> dict:
    """One polygon question per image (the baseline study), for workers who come with ``mode=polygon``."""
    check_project(state, project)
    with state.project.sessions.begin() as session:
        return {"created": len(add_polygon_tasks_for_images(session, state.project.id, state.project.config))}
