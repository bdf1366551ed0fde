"""A store that cannot write (a full disk, a read-only folder): 503 with ``Retry-After``, one log line per change.

A full disk is a condition of the machine, not a fault of the request: every request that meets it
answers ``503 {"detail": "...", "reason": "store_unavailable"}`` with ``Retry-After``, so clients
(the worker page, ``crowdpatch simulate --via``) wait and send the same request again; answers carry
a ``client_id``, so a retry never stores anything twice, and nothing is acknowledged before its
commit. The log says ``store cannot write: <why>`` when the condition starts and ``store writes
again`` when an answer or a lease is next committed, once each, instead of a traceback per request.
Nothing needs restarting: the next transaction after space is freed simply succeeds.
"""

from __future__ import annotations

import logging
import threading

from fastapi import Request
from fastapi.responses import JSONResponse

from crowdpatch.store.health import cannot_write_reason

RETRY_AFTER_SECONDS = 5
"""What a 503 asks clients to wait before sending the same request again."""

log = logging.getLogger(__name__)


class StoreHealth:
    """Whether the store writes, as the last request that wrote (or failed to) found it."""

    def __init__(self) -> None:
        self.cannot_write: str | None = None
        """Why the last write failed, while writes fail; None while they succeed."""
        self._lock = threading.Lock()

    def failed(self, reason: str) -> None:
        """A write failed for ``reason``: logged when writes worked until now."""
        with self._lock:
            if self.cannot_write is None:
                log.warning("store cannot write: %s; answering 503 until it can", reason)
            self.cannot_write = reason

    def wrote(self) -> None:
        """A write was committed: logged when writes failed until now (one attribute read otherwise)."""
        if self.cannot_write is None:
            return
        with self._lock:
            if self.cannot_write is not None:
                log.warning("store writes again")
                self.cannot_write = None


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler of database and file errors: 503 when the store cannot write, else the error as before."""
    reason = cannot_write_reason(exc)
    if reason is None:
        raise exc  # any other error stays a 500, with its traceback in the log
    request.app.state.crowdpatch.store_health.failed(reason)
    return JSONResponse(
        status_code=503,
        content={
            "detail": f"the server cannot store anything right now ({reason}); "
            f"send the same request again in {RETRY_AFTER_SECONDS} s",
            "reason": "store_unavailable",
        },
        headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
    )


def log_to_stderr() -> None:
    """Print the server's own warnings (these) beside uvicorn's, in its format; once per process."""
    logger = logging.getLogger("crowdpatch")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
