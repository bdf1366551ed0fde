"""What every request handler shares: the project, its dispatcher, and the secrets that sign tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.project import Project
from crowdpatch.server.choices import ChoiceOutlines
from crowdpatch.server.group_commit import GroupCommit
from crowdpatch.server.images import TaskPictures
from crowdpatch.server.photos import PhotoStore
from crowdpatch.server.progress import LiveMasks, progress
from crowdpatch.server.refusals import WorkerRefused
from crowdpatch.server.snapshot import FiguresSnapshot, dashboard_figures
from crowdpatch.server.store_health import StoreHealth
from crowdpatch.server.tokens import BadToken, SessionExpired, WorkerSession, constant_time_equal, read_session


@dataclass
class ServerState:
    project: Project
    dispatcher: DatabaseDispatcher
    live_masks: LiveMasks
    dispatcher_calls: GroupCommit
    """Runs the dispatcher's calls off the event loop (answers grouped; on SQLite every call)."""
    image_info: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    """image id -> (path, width, height), filled on first use (images never change once added)."""
    store_health: StoreHealth = field(default_factory=StoreHealth)
    """Whether the store writes (a full disk: 503s, and one log line when that starts and when it ends)."""
    choices: ChoiceOutlines = field(init=False)
    """The outlines pick questions offer: one store per process, so a pick's candidates are computed once."""
    pictures: TaskPictures = field(init=False)
    """Task pictures, drawn from the photos scaled once (``scaled/``) and kept within byte budgets."""
    dashboard: FiguresSnapshot = field(init=False)
    """The dashboard's figures, refreshed by one background thread while dashboards are open."""
    progress: FiguresSnapshot = field(init=False)
    """``/progress``'s counts, refreshed the same way (counting alone takes seconds in a large study)."""

    def __post_init__(self) -> None:
        self.choices = ChoiceOutlines(self.project.directory, self.project.config)
        self.pictures = TaskPictures(PhotoStore(self.project.directory))
        self.dashboard = FiguresSnapshot(
            lambda: dashboard_figures(self.project, self.live_masks, self.server.invite_secret)
        )
        self.progress = FiguresSnapshot(lambda: progress(self.project), min_interval=1.0, name="progress")

    @property
    def name(self) -> str:
        return self.project.config.name

    @property
    def server(self):
        return self.project.config.server


async def get_state(request: Request) -> ServerState:
    return request.app.state.crowdpatch


State = Annotated[ServerState, Depends(get_state)]


def check_project(state: ServerState, project: str) -> None:
    if project != state.name:
        raise HTTPException(404, f"no project named {project!r} here")


def server_state(request: Request) -> ServerState:
    """What the ``State`` dependency gives, read straight from the request (by the worker's endpoints)."""
    return request.app.state.crowdpatch


AUTHORIZATION_DOC = {
    "parameters": [
        {
            "name": "authorization",
            "in": "header",
            "required": False,
            "description": "`Bearer <token>` of the worker's session.",
            "schema": {"type": "string"},
        }
    ]
}
"""OpenAPI of the header :func:`worker_session` reads itself (``openapi_extra`` of the worker's endpoints)."""


def authenticate(state: ServerState, authorization: str | None) -> WorkerSession:
    """The bearer token's session (401 otherwise)."""
    bearer = {"WWW-Authenticate": "Bearer"}
    if not authorization or not authorization.startswith("Bearer "):
        raise WorkerRefused(401, "session_invalid", "missing 'Authorization: Bearer <token>'", headers=bearer)
    try:
        session = read_session(state.server.session_secret, authorization.removeprefix("Bearer ").strip())
    except SessionExpired as exc:
        raise WorkerRefused(401, "session_expired", str(exc), headers=bearer) from exc
    except BadToken as exc:
        raise WorkerRefused(401, "session_invalid", str(exc), headers=bearer) from exc
    if session.project != state.project.uid:  # the same secrets may sign for another project (a copied config)
        raise WorkerRefused(401, "session_invalid", "this session belongs to another project", headers=bearer)
    return session


async def worker_session(request: Request) -> WorkerSession:
    """The ``Worker`` dependency: the session of the request's bearer token.

    The header is read from the request, not declared as a parameter: FastAPI's extraction of one
    declared header cost as much as verifying the token, on the endpoints every answer passes.
    As a dependency it runs before the body's validation, so a request without a valid token is a
    401 whatever fields its JSON body holds (a body that is not JSON at all is FastAPI's 422 first).
    """
    return authenticate(server_state(request), request.headers.get("authorization"))


Worker = Annotated[WorkerSession, Depends(worker_session)]


def requester(
    state: State,
    x_api_key: Annotated[str | None, Header()] = None,
    key: Annotated[str | None, Query(description="The API key, for links (image previews, downloads).")] = None,
) -> None:
    given = x_api_key or key
    if not given or not constant_time_equal(given, state.server.effective_api_key()):
        raise HTTPException(401, "a valid X-API-Key header is required")


Requester = Depends(requester)
