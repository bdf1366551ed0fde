"""Response headers that keep browsers from leaking or misusing what the server sends, and CORS.

The server sets no cookies: workers carry a bearer token and the requester an API key, so there
is no ambient credential for another site to ride on (no CSRF), and CORS stays off unless the
requester names the origins that may call the API.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from crowdpatch.config import ServerConfig
from crowdpatch.server.limits import ASGIApp, Message, Receive, Scope, Send

WORKER_PAGE_FRAMERS = "'self' https://*.mturk.com"
"""MTurk shows an ExternalQuestion's worker page inside its own page (an iframe); nothing else may frame ours."""


class SecurityHeaders:
    """``nosniff``; no Referer (dashboard links carry ``?key=``, image links a signature); framing
    only where a platform needs it; JSON answers never cached (they carry tokens and live state)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        framers = WORKER_PAGE_FRAMERS if path.startswith("/w/") else "'none'"
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", f"frame-ancestors {framers}".encode()),
        ]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))  # type: ignore[call-overload]
                present = {key.lower() for key, _ in headers}
                headers += [(key, value) for key, value in extra if key not in present]
                if path.startswith("/api/") and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def add_cors(app: FastAPI, config: ServerConfig) -> None:
    """Only the configured origins, without credentials (tokens travel in headers, never cookies)."""
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            allow_credentials=False,
            max_age=600,
        )
