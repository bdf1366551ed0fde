"""The worker's JSON API: sessions, next task, answers, undo, completion, task images.

The two requests of every answer (``POST /answers``, ``GET /tasks/next``) also have a fast route
each (:class:`FastRoute`, at the end of this module), first in the application's routes: it serves
a well-formed request with the same pieces as the FastAPI route (its path, the bearer token by
:func:`~crowdpatch.server.state.authenticate`, the body by the same model, the same endpoint logic)
without FastAPI's per-request machinery, and hands anything else to the FastAPI route.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Awaitable, Callable, Literal, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from starlette.routing import BaseRoute, Match

from crowdpatch.boxes import Box
from crowdpatch.crowd.dispatch.database import NextTask
from crowdpatch.crowd.dispatch.rules import (
    AnswerRejected,
    Assignment,
    NewAnswer,
    NotLeased,
    SessionComplete,
    TooManyHeld,
    WorkerStopped,
    choice_count,
)
from crowdpatch.crowd.kinds import CORRECT, EXTREME, OUTLINE, PICK, POLYGON, VERIFY, shown_kind
from crowdpatch.saliency.outline import outline_mask, outline_polygons, salient_pixels
from crowdpatch.server import images, refusals
from crowdpatch.server.limits import Message, Receive, Scope, Send
from crowdpatch.server.platforms import MTURK_PREVIEW, completion, register_worker
from crowdpatch.server.refusals import WorkerRefused
from crowdpatch.server.schemas import (
    MAX_CHOICES,
    AnswerRequest,
    AnswerResponse,
    CompletionResponse,
    SessionRequest,
    SessionResponse,
    TaskResponse,
)
from crowdpatch.server.state import (
    AUTHORIZATION_DOC,
    ServerState,
    State,
    Worker,
    authenticate,
    check_project,
    requester,
    server_state,
)
from crowdpatch.server.tokens import (
    BadToken,
    WorkerSession,
    check_invite,
    constant_time_equal,
    image_signature,
    issue_session,
    new_session_key,
)
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow, WorkerRow, worker_evidence

API = "/api/v1"
NEXT_TASK = "/tasks/next"
ANSWERS = "/answers"
"""The paths of the answer loop's two requests, below ``API``: the FastAPI routes and the fast routes share them."""

router = APIRouter(prefix=API)
T = TypeVar("T")

DB_INT_MAX = 2**31 - 1
"""Ids are 32-bit integer columns: a larger id in a URL is a 422, not a database overflow (a 500)."""

MAX_EXCLUDE = 400
"""Longest ``exclude`` query of ``GET /tasks/next`` (a client shows a few task ids at most)."""


@router.post("/projects/{project}/sessions", status_code=201, response_model=SessionResponse)
def open_session(
    project: str, body: SessionRequest, state: State, x_api_key: Annotated[str | None, Header()] = None
) -> SessionResponse:
    """Open a worker session; the token goes in ``Authorization: Bearer <token>``.

    The session answers as the worker its platform evidence names (:func:`register_worker`): the same
    id and evidence continue one worker; the same id without it is another worker, who can neither act
    for the first nor get it stopped.
    """
    check_project(state, project)
    attributes: dict = {"study_id": body.study_id, "session_id": body.session_id, "hit_id": body.hit_id}
    external_id = body.worker_id
    if body.platform == "local":
        try:
            label = check_invite(state.server.invite_secret, state.project.uid, body.invite or "")
        except BadToken as exc:
            message = refusals.INVITE_INVALID if body.invite else refusals.INVITE_MISSING
            raise WorkerRefused(403, "invite_needed", message) from exc
        attributes["invite"] = label
    elif body.platform == "mturk":
        if not body.assignment_id or body.assignment_id == MTURK_PREVIEW:
            raise WorkerRefused(403, "preview", refusals.PREVIEW)
        attributes.update(assignment_id=body.assignment_id, turk_submit_to=body.turk_submit_to)
    elif body.platform == "simulated":
        requester(state, x_api_key)
    evidence = worker_evidence(body.platform, attributes)
    row = register_worker(state.project.sessions, state.project.id, body.platform, external_id, attributes, evidence)
    if row.banned:
        raise refusals.stopped(body.platform, state.server)
    server = state.server
    expires_at = time.time() + server.session_hours * 3600
    session = WorkerSession(row.id, state.project.uid, new_session_key(), body.platform, body.mode, expires_at)
    return SessionResponse(
        token=issue_session(server.session_secret, session),
        mode=body.mode,
        answers_given=state.dispatcher.answers_given(row.id),
        answers_per_session=server.answers_per_session,
    )


def image_info(state: ServerState, image_id: int) -> tuple[str, int, int]:
    if image_id not in state.image_info:
        with state.project.sessions() as session:
            row = session.get(ImageRow, image_id)
            state.image_info[image_id] = (row.path, row.width, row.height)
    return state.image_info[image_id]


async def handed_out(state: ServerState, assignment: Assignment, worker: WorkerSession) -> TaskResponse:
    """:func:`task_response` of a question just leased, in a request on the event loop. The hand-out reads the
    image's size with the question; where it did not, the size is read off the loop the first time this process
    needs it (on PostgreSQL a round trip, which would hold up every request of the process)."""
    if assignment.image_size is None and assignment.image_id not in state.image_info:
        await asyncio.get_running_loop().run_in_executor(None, image_info, state, assignment.image_id)
    return task_response(state, assignment, worker)


def task_response(state: ServerState, assignment: Assignment, worker: WorkerSession) -> TaskResponse:
    width, height = assignment.image_size or image_info(state, assignment.image_id)[1:]
    signature = image_signature(state.server.session_secret, state.project.uid, assignment.task_id, worker.worker_id)
    base = f"/api/v1/tasks/{assignment.task_id}/image?w={worker.worker_id}&s={signature}"
    return TaskResponse(
        task_id=str(assignment.task_id),
        kind=assignment.kind,
        image_url=base,
        context_url=base + "&part=context",
        question=assignment.question,
        lease_expires_at=datetime.fromtimestamp(assignment.lease_expires_at, timezone.utc).isoformat(),
        image_id=assignment.image_id,
        box=assignment.box.as_list(),
        grid_size=assignment.grid_size,
        image_width=width,
        image_height=height,
        view_box=images.view_box(assignment.kind, assignment.box, width, height).as_list(),
        variant=assignment.variant,
        active_cells=list(assignment.active_cells) if assignment.active_cells is not None else None,
        choice_urls=[f"{base}&part=choice&k={k}" for k in range(assignment.choices)] if assignment.choices else None,
    )


async def in_dispatcher(state: ServerState, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a dispatcher call off the event loop: in a group on the writer thread (on PostgreSQL answers
    with their next question only; other calls there in a transaction of their own), see :mod:`group_commit`.

    The calls waiting at once share a transaction and its commit, while the event loop goes on. A
    PostgreSQL round trip, or a row lock another process holds, must not stall the event loop either.
    """
    return await state.dispatcher_calls.run(call, *args, **kwargs)


def session_quota(state: ServerState, worker: WorkerSession) -> int | None:
    """Answers that end this worker's session, checked in the dispatcher's transaction (one round trip less).

    None for a rehearsal's simulated workers, which answer until the work runs out.
    """
    return None if worker.platform == "simulated" else state.server.answers_per_session


@router.get(
    NEXT_TASK,
    response_model=TaskResponse,
    responses={204: {"description": "nothing left for this worker"}},
    openapi_extra=AUTHORIZATION_DOC,
)
async def next_task(
    request: Request,
    worker: Worker,
    exclude: Annotated[
        str, Query(max_length=MAX_EXCLUDE, description="Comma-separated task ids already on screen.")
    ] = "",
) -> Response:
    """Lease the next question to this worker (204: nothing left, or the session's answers are given)."""
    return await lease_next(server_state(request), worker, exclude)


async def lease_next(state: ServerState, worker: WorkerSession, exclude: str) -> Response:
    """``GET /tasks/next`` once its request is read (by FastAPI, or by its :class:`FastRoute`)."""
    quota = session_quota(state, worker)
    skip = tuple(int(t) for t in exclude.split(",") if t.strip().isdigit())
    try:
        assignment = await in_dispatcher(
            state, state.dispatcher.next_task, worker.worker_id, worker.mode, skip, max_answers=quota
        )
    except SessionComplete:
        return Response(status_code=204)
    except WorkerStopped as exc:
        raise refusals.stopped(worker.platform, state.server) from exc
    except TooManyHeld as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "1"}) from exc
    if assignment is None:
        return Response(status_code=204)
    state.store_health.wrote()  # the lease was committed
    return json_response(await handed_out(state, assignment, worker))


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """A response model serialized here (FastAPI would validate the model it was given once more first)."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


@router.post(
    ANSWERS,
    status_code=201,
    response_model=AnswerResponse,
    responses={200: {"model": AnswerResponse}},
    openapi_extra=AUTHORIZATION_DOC,
)
async def post_answer(body: AnswerRequest, request: Request, worker: Worker) -> Response:
    """Store an answer; the same ``client_id`` again returns 200 and the same body, storing nothing."""
    return await store_answer(server_state(request), worker, body)


async def store_answer(state: ServerState, worker: WorkerSession, body: AnswerRequest) -> Response:
    """``POST /answers`` once its request is read (by FastAPI, or by its :class:`FastRoute`)."""
    source = "modeled" if worker.platform == "simulated" else "measured"
    answer = NewAnswer(
        worker.worker_id,
        int(body.task_id),
        body.value(),
        body.client_id,
        body.client_ms,
        time_source=source,
        worker_session=worker.key,
    )
    following: NextTask | None = None
    try:
        if body.next:
            stored, following = await in_dispatcher(
                state,
                state.dispatcher.submit_and_next,
                answer,
                mode=worker.mode,
                exclude=tuple(int(t) for t in body.exclude),
                max_answers=session_quota(state, worker),
            )
        else:
            stored = await in_dispatcher(
                state, state.dispatcher.store, answer, max_answers=session_quota(state, worker)
            )
    except (NotLeased, SessionComplete) as exc:
        raise HTTPException(409, str(exc)) from exc
    except AnswerRejected as exc:
        raise HTTPException(422, str(exc)) from exc
    if not stored.duplicate:
        state.store_health.wrote()  # the answer is committed
    result = AnswerResponse(
        answer_id=stored.answer_id,
        task_id=body.task_id,
        answers_given=stored.answers_given,
        session_complete=stored.answers_given >= state.server.answers_per_session,
        worker_stopped=stored.worker_stopped,
    )
    if following is not None:
        result.next = await handed_out(state, following.assignment, worker) if following.assignment else None
        result.next_status = "task" if following.assignment else following.reason
    return json_response(result, 200 if stored.duplicate else 201)


@router.post("/answers/undo", response_model=TaskResponse, openapi_extra=AUTHORIZATION_DOC)
def undo(state: State, worker: Worker) -> TaskResponse:
    """Take back the last answer given through this session (while its question is still open); its task comes back.

    409 once the session is finished, when the question is decided, or while you hold as many questions as you may.
    """
    try:
        return task_response(state, state.dispatcher.undo_last(worker.worker_id, worker.key), worker)
    except (NotLeased, SessionComplete, TooManyHeld) as exc:
        raise HTTPException(409, str(exc)) from exc
    except WorkerStopped as exc:
        raise refusals.stopped(worker.platform, state.server) from exc


@router.post("/sessions/complete", response_model=CompletionResponse, openapi_extra=AUTHORIZATION_DOC)
def complete(state: State, worker: Worker) -> CompletionResponse:
    """Finish the session: where to send the worker (Prolific), what to POST (MTurk), or a code (local).

    A worker stopped by quality control gets it only where the study pays stopped workers
    (``[server].pay_stopped_workers``; local invites always). A session that gave no answer gets it
    only where ``[server].complete_without_answers`` allows (409 otherwise). A finished session
    takes no more answers, and none of its answers can be taken back.
    """
    with state.project.sessions.begin() as session:
        row = session.get(WorkerRow, worker.worker_id)
        if row.banned and not refusals.code_offered_when_stopped(worker.platform, state.server):
            raise refusals.stopped(worker.platform, state.server)
        answers = state.dispatcher.answers_given(worker.worker_id)
        if answers == 0 and not state.server.complete_without_answers:
            raise refusals.no_answers()
        row.finished_at = row.finished_at or time.time()
        row.attributes = {**(row.attributes or {}), "answers": answers}
        return CompletionResponse(**completion(worker.platform, row, state.server))


@router.get("/tasks/{task_id}/image", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def task_image(
    task_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    state: State,
    w: Annotated[int, Query(ge=1, le=DB_INT_MAX)],
    s: Annotated[str, Query(max_length=64)],
    part: Literal["main", "context", "choice"] = "main",
    k: Annotated[int, Query(ge=0, lt=MAX_CHOICES, description="With part=choice: which outline of a pick.")] = 0,
    px: Annotated[
        float | None, Query(ge=16, le=4096, description="Width the picture is shown at, in CSS pixels.")
    ] = None,
    dpr: Annotated[float, Query(ge=1, le=4, description="The screen's device pixels per CSS pixel.")] = 1.0,
) -> Response:
    """The picture of a task, drawn at ``px`` x ``dpr`` pixels wide; ``part=choice``: a pick's outline ``k``.

    A correction's picture is its view box with the outline it asks about (the picked candidate as
    the earlier rounds' clicks redrew it), drawn like a pick's.

    The link (``image_url`` / ``context_url`` / ``choice_urls`` of the task) is signed and names a task, never a
    file: the path comes from the store, for this project's tasks only.
    """
    if not constant_time_equal(s, image_signature(state.server.session_secret, state.project.uid, task_id, w)):
        raise HTTPException(403, "invalid image link")
    with state.project.sessions() as session:
        task = session.get(TaskRow, task_id)
        if task is None or task.project_id != state.project.id:
            raise HTTPException(404, "no such task")
        kind, spec, box = task.kind, task.spec, Box.from_list(task.box)
        outlines: list[list[list[int]]] = []
        if kind == VERIFY and task.region_id is not None:
            outlines = [session.scalar(select(RegionRow.outline).where(RegionRow.id == task.region_id)) or []]
        elif kind == OUTLINE:
            image = session.get(ImageRow, task.image_id)
            salient = salient_pixels(image.saliency_path, state.project.config.saliency.threshold)
            outlines = outline_polygons(outline_mask(salient, box))
    path, width, height = image_info(state, task.image_id)
    css_px = px or images.MAIN_CSS_PX
    if part == "choice":
        data = choice_picture(
            state, task_id, kind, spec, path, images.view_box(PICK, box, width, height), k, css_px, dpr
        )
    elif part == "context":
        data = state.pictures.context(path, box, px or images.CONTEXT_CSS_PX, dpr)
    elif kind == CORRECT:
        view = images.view_box(CORRECT, box, width, height)
        data = state.pictures.choice(path, view, state.choices.corrected(task_id, path, spec or {}), css_px, dpr)
    elif kind in (VERIFY, OUTLINE):
        data = state.pictures.outlined(path, box, images.as_outlines(outlines), css_px, dpr)
    elif kind in (POLYGON, EXTREME):
        data = state.pictures.whole(path, css_px, dpr)
    else:
        data = state.pictures.patch(path, box, images.view_box(shown_kind(kind), box, width, height), css_px, dpr)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def choice_picture(
    state: ServerState, task_id: int, kind: str, spec: dict[str, Any] | None, path: str, view: Box, k: int,
    css_px: float, dpr: float,
) -> bytes:  # fmt: skip
    """Outline ``k`` of a pick over its view box (404 for another kind of task, or past its outlines)."""
    if kind != PICK or k >= (choice_count(kind, spec) or 0):
        raise HTTPException(404, f"task {task_id} offers no outline {k}")
    return state.pictures.choice(path, view, state.choices.of(task_id, path, spec or {})[k], css_px, dpr)


# -- the fast routes of the answer loop ----------------------------------------------------------
#
# FastAPI resolves a request to an included router's route in two passes, then solves the route's
# dependencies and validates the body through its generic machinery: together more server CPU than
# the rest of the HTTP stack, on the requests every worker sends once or twice per answer. A fast
# route reads the well-formed request itself, with the FastAPI route's own pieces; whatever it does
# not take as it is (no valid token, a body that does not validate, another content type, a query it
# does not know) goes back to the router unchanged (its body replayed), where the FastAPI route
# answers it: 422 with FastAPI's error list, and so on. The FastAPI routes stay the API's
# documentation (``/openapi.json``) and its reference behaviour (tests/test_hot_routes.py holds
# the two to the same answers, and to the same dependencies).

HANDED_ON = "crowdpatch.handed_on"
"""Scope key: the request is back at the router for its FastAPI route (the fast route does not match it again)."""

Serve = Callable[[ServerState, WorkerSession, Request, bytes], Awaitable[Response | None]]
"""Serves a request read by a fast route, or returns None to hand it to the FastAPI route."""


class FastRoute(BaseRoute):
    """``method`` ``path`` served by ``serve``, standing in for the FastAPI route of ``endpoint``."""

    def __init__(self, method: str, path: str, serve: Serve, endpoint: Callable[..., Any]):
        self.method = method
        self.path = path
        self.serve = serve
        self.endpoint = endpoint
        """The FastAPI endpoint this route stands in for (its route answers what this one hands on)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == self.method:
            if HANDED_ON not in scope:
                return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        state: ServerState = scope["app"].state.crowdpatch  # type: ignore[union-attr]
        body = await request.body() if self.method == "POST" else b""
        try:
            worker = authenticate(state, request.headers.get("authorization"))
        except HTTPException:  # the route says what is wrong first (it reads a body that is not JSON before the token)
            response = None
        else:
            response = await self.serve(state, worker, request, body)
        if response is None:
            scope[HANDED_ON] = True
            await scope["app"].router(scope, _replay(body, receive), send)  # type: ignore[union-attr]
            return
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the FastAPI route: the body already read, then whatever the client sends next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _serve_answer(state: ServerState, worker: WorkerSession, request: Request, body: bytes) -> Response | None:
    if request.headers.get("content-type") != "application/json":
        return None
    try:
        answer = AnswerRequest.model_validate_json(body)
    except ValidationError:
        return None
    return await store_answer(state, worker, answer)


async def _serve_next(state: ServerState, worker: WorkerSession, request: Request, _body: bytes) -> Response | None:
    query = request.scope["query_string"]
    exclude = ""
    if query:
        fields = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        if len(fields) != 1 or fields[0][0] != "exclude" or len(fields[0][1]) > MAX_EXCLUDE:
            return None
        exclude = fields[0][1]
    return await lease_next(state, worker, exclude)


def fast_routes() -> list[BaseRoute]:
    """The fast routes, to be first in the application's routes (``FastAPI(routes=...)``)."""
    return [
        FastRoute("POST", API + ANSWERS, _serve_answer, post_answer),
        FastRoute("GET", API + NEXT_TASK, _serve_next, next_task),
    ]
