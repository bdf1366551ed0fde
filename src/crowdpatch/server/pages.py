"""HTML pages: the worker page ``/w/<project>`` and the requester dashboard ``/admin/<project>``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from crowdpatch.server.state import State, check_project
from crowdpatch.server.tokens import constant_time_equal

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
router = APIRouter(include_in_schema=False)


@router.get("/w/{project}", response_class=HTMLResponse)
def worker_page(project: str, request: Request, state: State) -> HTMLResponse:
    check_project(state, project)
    config = state.project.config
    return templates.TemplateResponse(
        request,
        "worker.html",
        {"project": project, "target": config.target, "presentation": config.patches.presentation,
         "answers_per_session": config.server.answers_per_session},
    )


@router.get("/admin/{project}", response_class=HTMLResponse)
def dashboard_page(project: str, request: Request, state: State, key: str = "") -> HTMLResponse:
    check_project(state, project)
    valid = bool(key) and constant_time_equal(key, state.server.effective_api_key())
    return templates.TemplateResponse(
        request, "admin.html", {"project": project, "target": state.project.config.target, "valid": valid},
        status_code=200 if valid else 401,
    )
