"""Request limits enforced before any handler runs: body size (413) and request rate (429).

Both are plain ASGI middleware so that they see the raw byte stream: a client that streams a
chunked body without ``Content-Length`` is cut off at the limit too, before a JSON parser has
buffered all of it. Limits are read from the project's ``[server]`` section on every request, so
a test or a benchmark that changes the config object changes them at once.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from typing import Awaitable, Callable, MutableMapping
from urllib.parse import parse_qs

from fastapi import HTTPException

from crowdpatch.config import ServerConfig
from crowdpatch.server.tokens import BadToken, constant_time_equal, image_signature, read_session

Scope = MutableMapping[str, object]
Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IMAGE_PATH = re.compile(r"^/api/v1/tasks/(\d{1,18})/image$")


async def send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON error in FastAPI's own shape (``{"detail": ...}``), sent by middleware that runs before FastAPI."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):  # type: ignore[union-attr]
        if key == name:
            return value.decode("latin-1")
    return None


def _api_key(config: ServerConfig) -> str:
    """The requester's key, or "" when none is configured (requester routes then say so; limits still apply)."""
    try:
        return config.effective_api_key()
    except ValueError:
        return ""


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-stream.

    FastAPI re-raises HTTPExceptions met while parsing a body, so it becomes the 413.
    """

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes")


class BodySizeLimit:
    """413 for a body over ``[server].max_body_bytes``.

    Refused by its declared length at once, else by counting the streamed bytes.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.config.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await send_json(send, 413, BodyTooLarge(limit).detail, {"Connection": "close"})
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))  # type: ignore[arg-type]
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            # Reached only when no handler turned it into a response (a route that reads the body itself).
            if started:
                raise
            await send_json(send, 413, str(exc.detail), {"Connection": "close"})


class TokenBuckets:
    """One token bucket per key (a worker, an IP address): ``burst`` requests at once, ``rate`` per second after.

    Kept in memory per server process, so with N processes a client may get up to N times the rate;
    the least recently used buckets are forgotten past ``max_keys`` (a forgotten bucket comes back full).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, rate: float, burst: int) -> float:
        """Spend one token; 0 when allowed, else the seconds until a token is back."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / rate


class RateLimit:
    """429 with ``Retry-After`` past ``[server].rate_limit_*``: per worker for requests that carry its
    session token or a signed image link, per IP address for everything else, and for every request
    with a wrong API key whatever token it carries (failed key checks are what a key guesser makes).

    A worker behind a shared NAT is thus limited on its own, not with its lab. The requester (a valid
    API key) and the requester's simulated workers (whose sessions need that key) are not limited:
    they are trusted, and ``crowdpatch simulate --via`` and the load benchmark exist to make load.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig, project: str, buckets: TokenBuckets | None = None):
        self.app = app
        self.config = config
        self.project = project
        """The served project's uid, which its image links are signed for."""
        self.buckets = buckets or TokenBuckets()

    def _identity(self, scope: Scope) -> tuple[str, float, int] | None:
        """(bucket key, rate, burst) of this request, or None when it is not limited."""
        config = self.config
        raw_query = scope.get("query_string", b"")
        query = parse_qs(raw_query.decode("latin-1")) if raw_query else {}  # type: ignore[union-attr]
        key = _header(scope, b"x-api-key") or (query.get("key") or [None])[0]
        if key:
            expected = _api_key(config)
            if expected and constant_time_equal(key, expected):
                return None
            # A wrong key is a guess at the requester's: limited per address whatever else the request carries,
            # or a worker token (anyone can open a session) would let keys be guessed at its own rate, or at none.
            return self._address(scope)
        authorization = _header(scope, b"authorization")
        worker: int | None = None
        if authorization and authorization.startswith("Bearer "):
            try:
                session = read_session(config.session_secret, authorization.removeprefix("Bearer ").strip())
            except BadToken:
                session = None
            if session is not None:
                if session.platform == "simulated":
                    return None
                worker = session.worker_id
        image = IMAGE_PATH.match(str(scope.get("path", "")))
        if worker is None and image is not None:
            w, s = (query.get("w") or [""])[0], (query.get("s") or [""])[0]
            if (
                w.isdigit()
                and len(w) <= 18
                and constant_time_equal(s, image_signature(config.session_secret, self.project, int(image[1]), int(w)))
            ):
                worker = int(w)
        if worker is not None:
            return f"worker:{worker}", config.rate_limit_worker_per_second, config.rate_limit_worker_burst
        return self._address(scope)

    def _address(self, scope: Scope) -> tuple[str, float, int]:
        """The bucket of the request's IP address."""
        client = scope.get("client") or ("unknown", 0)
        return f"ip:{client[0]}", self.config.rate_limit_ip_per_second, self.config.rate_limit_ip_burst  # type: ignore[index]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        identity = self._identity(scope)
        if identity is not None:
            key, rate, burst = identity
            if rate > 0:
                wait = self.buckets.take(key, rate, burst)
                if wait > 0:
                    retry_after = max(1, math.ceil(wait))
                    who = "this worker session" if key.startswith("worker:") else "this address"
                    detail = (
                        f"too many requests from {who}: at most {rate:g} per second (bursts of {burst}); "
                        f"retry after {retry_after} s"
                    )
                    await send_json(send, 429, detail, {"Retry-After": str(retry_after)})
                    return
        await self.app(scope, receive, send)
