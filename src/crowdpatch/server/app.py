"""The FastAPI application over one project directory (``crowdpatch serve DIR``)."""

from __future__ import annotations

import gc
import inspect
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.project import Project
from crowdpatch.server import admin, api, pages
from crowdpatch.server.errors import install_error_handlers
from crowdpatch.server.group_commit import GroupCommit, OwnTransactions
from crowdpatch.server.limits import BodySizeLimit, RateLimit
from crowdpatch.server.progress import LiveMasks
from crowdpatch.server.security import SecurityHeaders, add_cors
from crowdpatch.server.state import ServerState
from crowdpatch.server.store_health import log_to_stderr
from crowdpatch.store.checkpoints import checkpointer_for
from crowdpatch.store.lease_vacuum import lease_vacuum_for

STATIC_DIR = Path(__file__).with_name("static")
ENV_PROJECT = "CROWDPATCH_PROJECT_DIR"
ENV_DB = "CROWDPATCH_DB_URL"


def open_served_project(directory: Path, db_url: str | None = None) -> Project:
    """The project, its database migrated to the newest schema (opening runs Alembic)."""
    if db_url:
        from crowdpatch.config import load_config
        from crowdpatch.store import open_database

        config = load_config(directory)
        config.db_url = db_url
        engine, sessions = open_database(config.resolved_db_url(directory))
        project = Project.open(directory, engine=engine, sessions=sessions)
        project.config.db_url = db_url
        return project
    return Project.open(directory)


def telemetry_off() -> dict:
    """FastAPI's OpenTelemetry off, where this FastAPI has it (0.165 and later).

    Left on, it asks OpenTelemetry on every request whether a provider is configured (environment
    lookups): a measurable share of the server's time per answer, for spans nobody here collects.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def freeze_startup_objects() -> None:
    """Keep the objects that live as long as the server out of the garbage collector's full passes.

    The imported libraries, the app and the project are ~300,000 objects that the collector's
    oldest generation would walk whole, several times a second under load (the objects of requests
    in flight survive the young collections and soon ask for another full one): each such pause
    stalls every request in flight and sets the p99 latency of a busy server (docs/benchmarks.md).
    Frozen (:func:`gc.freeze`) after one last collection, they are never walked again; what the
    requests create is collected as before. Only a serving process does this (``serve``, and each
    of its ``--workers`` processes): in a process that goes on building other things, such as a
    test session, frozen objects that later become garbage would never be freed.
    """
    gc.collect()
    gc.freeze()


def create_app(project: Project, fast_routes: bool = True) -> FastAPI:
    """The server of ``project``; ``fast_routes`` False: the answer loop by its FastAPI routes alone (the reference)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # While serving, a SQLite database is checkpointed by a thread, not inside the writer's commits;
        # a PostgreSQL one has its lease table vacuumed by a thread, not only by autovacuum's minute visits.
        checkpointer = _app.state.checkpointer = checkpointer_for(project.engine)
        lease_vacuum = _app.state.lease_vacuum = lease_vacuum_for(project.engine)
        try:
            yield
        finally:
            _app.state.crowdpatch.dashboard.stop()
            _app.state.crowdpatch.progress.stop()
            for maintenance in (checkpointer, lease_vacuum):
                if maintenance is not None:
                    maintenance.stop()

    app = FastAPI(
        title="crowdpatch",
        version="1",
        description="Crowdsourced patch labeling: "
        "the worker API (sessions, tasks, answers) and the requester API (X-API-Key).",
        lifespan=lifespan,
        routes=api.fast_routes() if fast_routes else None,
        **telemetry_off(),
    )
    dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
    calls = GroupCommit(dispatcher, alone=OwnTransactions() if dispatcher.postgres else None)
    app.state.crowdpatch = ServerState(
        project=project, dispatcher=dispatcher, live_masks=LiveMasks(project), dispatcher_calls=calls
    )
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Added innermost first: headers wrap every answer (429 and 413 included);
    # floods are refused before bodies are read.
    install_error_handlers(app)
    add_cors(app, project.config.server)
    app.add_middleware(BodySizeLimit, config=project.config.server)
    app.add_middleware(RateLimit, config=project.config.server, project=project.uid)
    app.add_middleware(SecurityHeaders)
    return app


def serving_app(project: Project) -> FastAPI:
    """The app of a process that only serves: built, then its long-lived objects frozen."""
    log_to_stderr()
    app = create_app(project)
    freeze_startup_objects()
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: each process opens the project named in the environment."""
    return serving_app(open_served_project(Path(os.environ[ENV_PROJECT]), os.environ.get(ENV_DB) or None))
