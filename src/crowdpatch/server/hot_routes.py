"""The two requests of every answer (``POST /answers``, ``GET /tasks/next``), read without FastAPI's per-request machinery.

FastAPI 0.165 resolves a request to an included router's route in two passes, then solves the
route's dependencies and validates the body through its generic machinery: together more server
CPU than the rest of the HTTP stack, on the requests every worker sends once or twice per answer
(see docs/benchmarks.md, "This version (stop 12)"). Here the well-formed request is read directly, with
the same pieces: the bearer token by :func:`state.authenticate`, the body by the same pydantic
model (``AnswerRequest``), and the endpoint's logic is the same function (:func:`api.store_answer`,
:func:`api.lease_next`).

Anything this module does not take as it is (no valid token, a body that does not validate, another
content type, a query it does not know) is handed to the router again, unchanged (its body
replayed), where the documented FastAPI route answers it: 422 with FastAPI's error list, and so on.
The FastAPI routes stay the API's documentation (``/openapi.json``) and the reference behaviour.
"""

from __future__ import annotations

from typing import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import HTTPException
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Router

from crowdpatch.server import api
from crowdpatch.server.limits import ASGIApp, Message, Receive, Scope, Send
from crowdpatch.server.schemas import AnswerRequest
from crowdpatch.server.state import ServerState, authenticate
from crowdpatch.server.tokens import WorkerSession

HANDED_ON = "crowdpatch.handed_on"
"""Scope key: the request is back at the router for its FastAPI route (the fast route does not match it again)."""

Serve = Callable[[ServerState, WorkerSession, Request, bytes], Awaitable[Response | None]]
"""Serves a request read here, or returns None to hand it to the FastAPI route."""


class HotRoute(BaseRoute):
    """One method and path served by ``serve``; what it declines goes back to ``router``."""

    def __init__(self, router: ASGIApp, method: str, path: str, serve: Serve):
        self.router = router
        self.method = method
        self.path = path
        self.serve = serve

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == self.method and HANDED_ON not in scope:
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        state: ServerState = scope["app"].state.crowdpatch  # type: ignore[index,union-attr]
        body = await request.body() if self.method == "POST" else b""
        try:
            worker = authenticate(state, request.headers.get("authorization"))
        except HTTPException:  # the route says what is wrong first (it reads a body that is not JSON before the token)
            response = None
        else:
            response = await self.serve(state, worker, request, body)
        if response is None:
            scope[HANDED_ON] = True
            await self.router(scope, _replay(body, receive), send)
            return
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the FastAPI route: the body already read, then whatever the client sends next (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def serve_answer(state: ServerState, worker: WorkerSession, request: Request, body: bytes) -> Response | None:
    if request.headers.get("content-type") != "application/json":
        return None
    try:
        answer = AnswerRequest.model_validate_json(body)
    except ValidationError:
        return None
    return await api.store_answer(state, worker, answer)


async def serve_next(state: ServerState, worker: WorkerSession, request: Request, _body: bytes) -> Response | None:
    query = request.scope["query_string"]
    exclude = ""
    if query:
        fields = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        if len(fields) != 1 or fields[0][0] != "exclude" or len(fields[0][1]) > api.MAX_EXCLUDE:
            return None
        exclude = fields[0][1]
    return await api.lease_next(state, worker, exclude)


def install_hot_routes(router: Router) -> None:
    """Put the fast routes first in the application's router (which they hand declined requests back to)."""
    router.routes[:0] = [
        HotRoute(router, "POST", "/api/v1/answers", serve_answer),
        HotRoute(router, "GET", "/api/v1/tasks/next", serve_next),
    ]
