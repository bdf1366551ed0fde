"""HTML pages: the worker page and the requester dashboard.

The worker page ``/w/<project>`` comes with its instruction examples; the dashboard is ``/admin/<project>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from crowdpatch.crowd.kinds import question_text
from crowdpatch.server import examples
from crowdpatch.server.refusals import INVITE_MISSING, refusal_body
from crowdpatch.server.state import State, check_project
from crowdpatch.server.tokens import constant_time_equal

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
router = APIRouter(include_in_schema=False)

ARRIVAL_PARAMETERS = ("PROLIFIC_PID", "assignmentId", "invite")
"""A worker link carries one of these (Prolific, MTurk, a local invite); a page opened without any cannot start."""


@router.get("/w/{project}", response_class=HTMLResponse)
def worker_page(project: str, request: Request, state: State) -> HTMLResponse:
    """The worker page.

    Opened without a platform's parameters or an invite, it says an invite is needed, and how to get one.
    """
    config = state.project.config
    if project != state.name:
        refusal, status = (
            refusal_body("not_found", f"There is no study named {project!r} here: check the link you were given."),
            404,
        )
    elif not any(request.query_params.get(name) for name in ARRIVAL_PARAMETERS):
        refusal, status = refusal_body("invite_needed", INVITE_MISSING), 403
    else:
        refusal, status = None, 200
    return templates.TemplateResponse(
        request,
        "worker.html",
        {
            "project": project,
            "target": config.target,
            "presentation": config.patches.presentation,
            "answers_per_session": config.server.answers_per_session,
            "refusal": refusal,
            "grid_size": config.patches.grid_size,
            "example_cells": examples.grid_cells_on(config.patches.grid_size),
            "precise": config.crowd.planner == "precise",
            "example_points": examples.extreme_marks(),
            "example_clicks": examples.correct_marks(),
            "questions": {
                kind: question_text(kind, config.target)
                for kind in ("verify", "grid", "patch", "extreme", "pick", "correct")
            },
        },
        status_code=status,
    )


@router.get("/w/{project}/examples/{name}.jpg", response_class=Response)
async def example_picture(
    project: str,
    name: examples.ExampleName,
    state: State,
    px: Annotated[float, Query(ge=16, le=1024)] = 320,
    dpr: Annotated[float, Query(ge=1, le=4)] = 1.0,
) -> Response:
    """An instruction example's picture, drawn like a task's (cached: the same few for every worker)."""
    check_project(state, project)
    data = await run_in_threadpool(examples.render, name, round(px), round(dpr * 4) / 4)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/admin/{project}", response_class=HTMLResponse)
def dashboard_page(project: str, request: Request, state: State, key: str = "") -> HTMLResponse:
    check_project(state, project)
    valid = bool(key) and constant_time_equal(key, state.server.effective_api_key())
    return templates.TemplateResponse(
        request,
        "admin.html",
        {"project": project, "target": state.project.config.target, "valid": valid},
        status_code=200 if valid else 401,
    )
