"""`crowdpatch serve`: the worker page, the dashboard and the JSON API over one project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        directory: Annotated[Path, typer.Argument(help="Project directory.")],
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        db: Annotated[Optional[str], typer.Option(help="Database URL (default: the project's); PostgreSQL for several processes.")] = None,
        workers: Annotated[int, typer.Option(
            help="Server processes. On SQLite they take turns writing (one writer at a time, by a file lock); "
                 "PostgreSQL also serves processes on several machines.",
        )] = 1,
    ) -> None:
        """Serve real workers (Prolific, MTurk, local invites) and the requester dashboard."""
        import uvicorn

        from crowdpatch.config import ConfigError
        from crowdpatch.project import ProjectError
        from crowdpatch.server.app import ENV_DB, ENV_PROJECT, open_served_project, serving_app

        try:
            project = open_served_project(directory, db)
        except (ConfigError, ProjectError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1)
        # Secrets generated for a project made by an older release are kept, so every process agrees on them.
        project.save_config()
        name = project.config.name
        typer.echo(f"crowdpatch: serving {name} on http://{host}:{port}")
        typer.echo(f"  worker page:  http://{host}:{port}/w/{name}   (Prolific / MTurk / ?invite=...)")
        typer.echo(f"  dashboard:    http://{host}:{port}/admin/{name}?key={project.config.server.effective_api_key()}")
        typer.echo(f"  API key:      {project.config.server.effective_api_key()}")
        # Warnings only; no access log (at this level it would print nothing, yet uvicorn would still format
        # each request's log arguments: CPU on every answer).
        quiet = {"log_level": "warning", "access_log": False}
        if workers > 1:
            project.close()
            os.environ[ENV_PROJECT] = str(Path(directory).resolve())
            if db:
                os.environ[ENV_DB] = db
            uvicorn.run("crowdpatch.server.app:app_from_env", factory=True, host=host, port=port, workers=workers, **quiet)
        else:
            uvicorn.run(serving_app(project), host=host, port=port, **quiet)
