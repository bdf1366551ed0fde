"""Where workers come from and how they leave: Prolific, MTurk ExternalQuestion, local invites."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.config import ServerConfig
from crowdpatch.server.tokens import local_completion_code
from crowdpatch.store.models import WorkerRow

MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"


def register_worker(
    sessions: sessionmaker[Session],
    project_id: int,
    platform: str,
    external_id: str,
    attributes: dict[str, Any],
    evidence: str | None = "",
) -> WorkerRow:
    """The worker for (platform, external id, evidence), created on first arrival; safe against concurrent arrivals.

    ``evidence`` (:func:`~crowdpatch.store.models.worker_evidence`) is what ties arrivals to one worker:
    only an arrival that shows the same evidence continues a worker (and adds to its attributes). None:
    the arrival showed none, and is a worker of its own, whatever its id. The default "" is for callers
    that are trusted with the id alone (the requester's simulated workers, tests, benchmarks).
    """
    given = {k: v for k, v in attributes.items() if v is not None}
    for _ in range(2):
        with sessions.begin() as session:
            row = (
                None
                if evidence is None
                else session.scalar(
                    select(WorkerRow).where(
                        WorkerRow.project_id == project_id,
                        WorkerRow.platform == platform,
                        WorkerRow.external_id == external_id,
                        WorkerRow.evidence == evidence,
                    )
                )
            )
            if row is not None:
                row.attributes = {**(row.attributes or {}), **given}
                return row
            try:
                row = WorkerRow(
                    project_id=project_id,
                    platform=platform,
                    external_id=external_id,
                    evidence=evidence,
                    attributes=given,
                )
                session.add(row)
                session.flush()
                return row
            except IntegrityError:
                session.rollback()
    raise RuntimeError(f"could not register worker {platform}:{external_id}")


def completion(platform: str, worker: WorkerRow, server: ServerConfig) -> dict[str, Any]:
    """What the page does at the end: redirect (Prolific), form POST (MTurk) or show a code (local)."""
    attributes = worker.attributes or {}
    if platform == "prolific":
        code = server.prolific_completion_code
        return {"platform": platform, "code": code, "redirect_url": server.prolific_complete_url.format(code=code)}
    if platform == "mturk":
        base = (attributes.get("turk_submit_to") or "https://www.mturk.com").rstrip("/")
        return {
            "platform": platform,
            "code": None,
            "submit_url": f"{base}/mturk/externalSubmit",
            "fields": {
                "assignmentId": attributes.get("assignment_id", ""),
                "answers": str(attributes.get("answers", "")),
            },
        }
    return {"platform": platform, "code": local_completion_code(server.invite_secret, worker.id)}


def worker_link(base_url: str, project: str, platform: str, invite: str | None = None, mode: str = "patch") -> str:
    """The link a requester puts into a study: the platform fills in its own placeholders."""
    url = f"{base_url.rstrip('/')}/w/{project}"
    params: dict[str, str] = {}
    if platform == "prolific":
        params = {"PROLIFIC_PID": "{{%PROLIFIC_PID%}}", "STUDY_ID": "{{%STUDY_ID%}}", "SESSION_ID": "{{%SESSION_ID%}}"}
    elif platform == "local" and invite:
        params = {"invite": invite}
    if mode != "patch":
        params["mode"] = mode
    if not params:
        return url
    return url + "?" + urlencode(params, safe="{}%")
