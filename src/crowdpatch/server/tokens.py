"""Signed, stateless tokens: worker sessions, local invites, image links and local completion codes.

Every server process verifies them with the project's secrets alone, so a load balancer may send
a worker's requests to any process. Sessions, invites and image links name the project they were
made for by its uid (``ProjectRow.uid``, random per project), inside what is signed: projects that
share secrets (a copied ``crowdpatch.toml``, one PostgreSQL database) still refuse each other's.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class BadToken(ValueError):
    """A token that was not issued by this project, or has expired."""


class SessionExpired(BadToken):
    """A worker session token of this project whose time is up."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def constant_time_equal(given: str, expected: str) -> bool:
    """``hmac.compare_digest`` on bytes: on str it raises TypeError for non-ASCII text, which a client
    controls (a header is decoded as latin-1, JSON may hold lone surrogates): that would be a 500."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def sign(secret: str, message: str, length: int = 32) -> str:
    return _b64(hmac.new(secret.encode(), message.encode("utf-8", "surrogatepass"), hashlib.sha256).digest())[:length]


@dataclass(frozen=True)
class WorkerSession:
    """What a worker's token carries: who answers (``worker_id``, a worker row), through which session (``key``)."""

    worker_id: int
    project: str
    """The uid of the project the session was opened in."""
    key: str
    """Random per session opened: the answers given through it are this session's (undo takes back only those)."""
    platform: str
    mode: str
    expires_at: float


def new_session_key() -> str:
    return secrets.token_urlsafe(12)


def issue_session(secret: str, session: WorkerSession) -> str:
    fields = [session.worker_id, session.project, session.key, session.platform, session.mode, session.expires_at]
    body = _b64(json.dumps(fields).encode())
    return f"{body}.{sign(secret, 'session:' + body)}"


def read_session(secret: str, token: str, now: float | None = None) -> WorkerSession:
    session = _verified_session(secret, token)
    if session is None:
        raise BadToken("invalid session token")
    if session.expires_at < (time.time() if now is None else now):
        raise SessionExpired("session expired: open your link again to go on (your answers are kept)")
    return session


@functools.lru_cache(maxsize=4096)
def _verified_session(secret: str, token: str) -> WorkerSession | None:
    """The session a token carries, None when its signature or body is bad (expiry is checked per request).

    A token is verified on every request, twice (the rate limit and the handler): remembering the
    verdicts of the last few thousand tokens spares the HMAC and the JSON of each.
    """
    body, _, signature = token.partition(".")
    if not signature or not constant_time_equal(signature, sign(secret, "session:" + body)):
        return None
    try:
        worker_id, project, key, platform, mode, expires_at = json.loads(_unb64(body))
        return WorkerSession(int(worker_id), str(project), str(key), str(platform), str(mode), float(expires_at))
    except (ValueError, TypeError):
        return None


def make_invite(secret: str, project: str, label: str) -> str:
    """A local invite to project ``project`` (its uid): ``label.signature``; anyone holding it may open worker
    sessions there, and the label is the evidence that ties a worker's sessions (``WorkerRow.evidence``)."""
    return f"{label}.{sign(secret, f'invite:{project}:{label}', 16)}"


def check_invite(secret: str, project: str, invite: str) -> str:
    """The label of a valid invite to ``project`` (BadToken for any other, an invite to another project included)."""
    label, _, signature = invite.rpartition(".")
    if not label or not constant_time_equal(signature, sign(secret, f"invite:{project}:{label}", 16)):
        raise BadToken("invalid invite")
    return label


def image_signature(secret: str, project: str, task_id: int, worker_id: int) -> str:
    return sign(secret, f"image:{project}:{task_id}:{worker_id}", 22)


def local_completion_code(secret: str, worker_id: int) -> str:
    """A code the requester can check against the worker (the dashboard lists it)."""
    return sign(secret, f"complete:{worker_id}", 10).upper().replace("-", "X").replace("_", "Y")
