"""`crowdpatch serve`: the worker page, the dashboard and the JSON API over one project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:  # the CLI imports this module at start: the project's modules load when serve runs
    from crowdpatch.project import Project

LOCAL_INVITE_LABEL = "local"
"""The label of the invite ``serve`` prints.

It is the same invite as the dashboard's "Make links", so it is made once and reused.
"""


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        directory: Annotated[Path, typer.Argument(help="Project directory.")],
        host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port (0: any free port; the links name the one taken).")] = 8000,
        db: Annotated[
            Optional[str], typer.Option(help="Database URL (default: the project's); PostgreSQL for several processes.")
        ] = None,
        workers: Annotated[
            int,
            typer.Option(
                help="Server processes. On SQLite they take turns writing (one writer at a time, by a file lock); "
                "PostgreSQL also serves processes on several machines.",
            ),
        ] = 1,
    ) -> None:
        """Serve real workers (Prolific, MTurk, local invites) and the requester dashboard.

        The port is taken before anything is printed: a busy port is one line on stderr and exit code 1.
        """
        import uvicorn
        from sqlalchemy.exc import DBAPIError

        from crowdpatch.config import ConfigError
        from crowdpatch.project import ProjectError
        from crowdpatch.server.app import ENV_DB, ENV_PROJECT, open_served_project, serving_app
        from crowdpatch.server.listen import CannotListen, bound_socket, link_host, listening_socket
        from crowdpatch.server.processes import StartupFailed, balances_by_port, run_processes
        from crowdpatch.store.db import refresh_planner_statistics
        from crowdpatch.store.health import storage_error_message

        def fail(message: str) -> None:
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1)

        def cannot_write(exc: OSError | DBAPIError) -> None:
            read_only = " (the folder is not writable)" if not os.access(directory, os.W_OK) else ""
            fail(f"project {directory}: {storage_error_message(exc)}{read_only}; the server needs to write there")

        try:
            project = open_served_project(directory, db)
        except (ConfigError, ProjectError) as exc:
            fail(str(exc))
        except (OSError, DBAPIError) as exc:  # a read-only folder, a full disk: the store cannot be opened to write
            cannot_write(exc)
        try:
            sock = listening_socket(host, port)
        except CannotListen as exc:
            project.close()
            fail(exc.strerror)
        port = sock.getsockname()[1]
        try:
            # Secrets generated for a project made by an older release are kept, so every process agrees on them.
            project.save_config()
        except OSError as exc:
            sock.close()
            project.close()
            cannot_write(exc)
        refresh_planner_statistics(project.engine)
        print_links(project, f"http://{link_host(host)}:{port}")
        # Warnings only; no access log (at this level it would print nothing, yet uvicorn would still format
        # each request's log arguments: CPU on every answer).
        quiet = {"log_level": "warning", "access_log": False}
        if workers > 1:
            # The processes bind the port again: the check above was on the same port.
            sock.close()
            project.close()
            os.environ[ENV_PROJECT] = str(Path(directory).resolve())
            if db:
                os.environ[ENV_DB] = db
            if balances_by_port():
                # Bound, not listening: the port stays this server's, and no connection waits on it unaccepted.
                reserved = bound_socket(host, port, reuse_port=True)
                try:
                    run_processes(host, port, workers, quiet)
                except StartupFailed as exc:
                    fail(f"{exc}; see the lines above")
                finally:
                    reserved.close()
                return
            try:
                uvicorn.run(
                    "crowdpatch.server.app:app_from_env", factory=True, host=host, port=port, workers=workers, **quiet
                )
            except SystemExit as exc:  # uvicorn's own startup failure (exit 3), which here means "input skipped"
                if exc.code in (0, None):
                    raise
                fail(f"the server did not start (uvicorn exit {exc.code}); see the lines above")
            return
        server = uvicorn.Server(uvicorn.Config(serving_app(project), **quiet))
        server.run(sockets=[sock])
        if not server.started:
            fail("the server did not start; see the lines above")


def print_links(project: Project, base: str) -> None:
    """What a requester opens or hands out: a ready invite link, the platforms' study URLs, the dashboard."""
    from crowdpatch.server.platforms import worker_link
    from crowdpatch.server.tokens import make_invite

    config = project.config
    name, key = config.name, config.server.effective_api_key()
    invite = make_invite(config.server.invite_secret, project.uid, LOCAL_INVITE_LABEL)
    typer.echo(f"crowdpatch: serving {name} on {base}")
    typer.echo(
        f"  invite link:  {worker_link(base, name, 'local', invite)}   (open it, or send it to the people you invite)"
    )
    typer.echo(f"  Prolific:     {worker_link(base, name, 'prolific')}")
    typer.echo(
        f"  MTurk:        {worker_link(base, name, 'mturk')}   "
        "(ExternalQuestion URL; opened without MTurk it asks for an invite)"
    )
    typer.echo(f"  dashboard:    {base}/admin/{name}?key={key}")
    typer.echo(f"  API key:      {key}")
