"""Why a worker cannot go on, said on a page titled by what happened.

A refused worker request answers JSON with ``detail`` (the sentence the worker reads), ``reason``
(what happened, for clients), ``title`` (the worker page's heading for it) and, for a worker stopped
by quality control, ``code_offered``: whether the page may still fetch the completion code
(``POST /sessions/complete``). The worker page shows all of it; every word lives here.
"""

from __future__ import annotations

from typing import Literal

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from crowdpatch.config import ServerConfig

Reason = Literal["invite_needed", "stopped", "session_expired", "session_invalid", "preview", "not_found", "no_answers"]

TITLES: dict[Reason, str] = {
    "invite_needed": "Invite needed",
    "stopped": "You have been stopped",
    "session_expired": "Session expired",
    "session_invalid": "Link not valid",
    "preview": "Preview only",
    "not_found": "Study not found",
    "no_answers": "Nothing answered yet",
}

INVITE_MISSING = (
    "This page opens with an invite link (one that ends in ?invite=...): ask whoever sent you here for yours."
)
INVITE_INVALID = "This invite link is not valid for this study: it may have been cut short, or belong to another study."
INVITE_HINT = (
    "Running this study? crowdpatch serve prints a ready invite link when it starts, "
    "and the dashboard makes more (Links for workers)."
)
STOPPED = (
    "Your answers did not pass this study's quality checks (questions with known answers, answering speed, "
    "or the same answer again and again), so no more questions can be offered to you. Thank you for your time."
)
STOPPED_PAID = "You are paid for the answers you gave: your completion code is below."
PREVIEW = "Accept the HIT first: a preview cannot answer."
NO_ANSWERS = (
    "A session is completed with at least one answer, and this one has none. If no question was shown, there is "
    "none for you at the moment: come back later, or return the study."
)


class WorkerRefused(HTTPException):
    """A worker's request refused for a reason the worker page explains on a page of its own."""

    def __init__(
        self,
        status_code: int,
        reason: Reason,
        detail: str,
        *,
        code_offered: bool = False,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status_code, detail, headers)
        self.reason: Reason = reason
        self.code_offered = code_offered


def code_offered_when_stopped(platform: str, server: ServerConfig) -> bool:
    """Whether a worker stopped by quality control still gets a completion code.

    Local invites always do: their code names the worker on the dashboard, beside "stopped by".
    On Prolific and MTurk the code is what pays, so ``[server].pay_stopped_workers`` decides.
    """
    return platform == "local" or server.pay_stopped_workers


def stopped(platform: str, server: ServerConfig) -> WorkerRefused:
    """The 403 of a worker stopped by quality control."""
    offered = code_offered_when_stopped(platform, server)
    return WorkerRefused(403, "stopped", f"{STOPPED} {STOPPED_PAID}" if offered else STOPPED, code_offered=offered)


def no_answers() -> WorkerRefused:
    """The 409 of a session completed before it gave any answer (``[server].complete_without_answers`` off)."""
    return WorkerRefused(409, "no_answers", NO_ANSWERS)


def refusal_body(reason: Reason, detail: str, code_offered: bool = False) -> dict:
    body: dict = {"detail": detail, "reason": reason, "title": TITLES[reason]}
    if reason == "stopped":
        body["code_offered"] = code_offered
    if reason == "invite_needed":
        body["hint"] = INVITE_HINT
    return body


async def worker_refused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkerRefused)
    return JSONResponse(
        refusal_body(exc.reason, str(exc.detail), exc.code_offered), status_code=exc.status_code, headers=exc.headers
    )
