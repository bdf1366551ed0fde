"""The error answers: 422s that can always be written, refusals the worker page explains, 503 for a full disk.

A validation error echoes the client's input back: FastAPI's default handler puts each offending
value into the response. JSON has no NaN or Infinity, so a body such as ``[NaN, 2]`` (Python's
parser accepts it) would make the 422 itself fail as a 500, and so would a lone surrogate
(``"\\ud800"``, valid JSON, but no text UTF-8 can encode). Non-finite numbers are therefore echoed
as strings, and a lone surrogate as its escape (``\\ud800``).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from crowdpatch.server.refusals import WorkerRefused, worker_refused
from crowdpatch.server.store_health import store_unavailable


def _echoable(value: Any) -> Any:
    """``value`` as a JSON answer can hold it (keys included)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_echoable(key): _echoable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_echoable(item) for item in value]
    return value


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": _echoable(jsonable_encoder(exc.errors()))})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(WorkerRefused, worker_refused)
    # A full disk or a read-only store: 503 with Retry-After (any other such error is still a 500).
    app.add_exception_handler(DBAPIError, store_unavailable)
    app.add_exception_handler(OSError, store_unavailable)
