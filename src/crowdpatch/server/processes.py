"""`crowdpatch serve --workers N`: N server processes, each listening on a socket of its own on the one port.

Processes that share one listening socket (uvicorn's way) take turns accepting as the kernel wakes
them, and the one that wakes first accepts every connection waiting: the workers of a study open
their keep-alive connections together, and under load one process served 31 of 32 while the other
idled (docs/benchmarks.md, "Connections per process"). Here each process binds its own socket with
``SO_REUSEPORT``, and the kernel spreads new connections over them by a hash of each connection's
addresses, as nginx's ``reuseport`` does; a process that ends up with more than its share of long-lived
keep-alive connections asks some of their clients to connect anew (:mod:`crowdpatch.server.balance`).

This process supervises: it starts the N processes, starts again any that dies unexpectedly (a crash,
the out-of-memory killer), and on SIGINT or SIGTERM stops them all, each finishing the requests it is
answering. A process that cannot start its server (uvicorn's start-up failure) stops them all. If this
process is killed outright (SIGKILL), the kernel tells its processes to stop (Linux's parent-death
signal): no server is left answering on the port after the command that started it is gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import socket
import sys
import threading
import traceback
from multiprocessing.process import BaseProcess
from typing import Any

from crowdpatch.server.listen import listening_socket

LINUX = sys.platform.startswith("linux")
"""Where both things this module leans on exist: ``SO_REUSEPORT`` that spreads connections, the parent-death signal."""

STARTUP_FAILURE = 3
"""The exit code of a server process that could not start (uvicorn's own, ``uvicorn.config.STARTUP_FAILURE``)."""

PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when its parent ends."""

STOP_SECONDS = 30.0
"""How long the processes have to finish their requests once told to stop, before they are killed."""


class StartupFailed(RuntimeError):
    """A server process could not start; its own output says why."""


def balances_by_port() -> bool:
    """Whether this system spreads the connections of one port over the sockets listening on it (Linux)."""
    return LINUX and hasattr(socket, "SO_REUSEPORT")


def run_processes(host: str, port: int, count: int, uvicorn_options: dict[str, Any]) -> None:
    """Serve the project named in the environment (``app_from_env``) from ``count`` processes, until a signal."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each, as uvicorn's own processes
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    connections = context.RawArray("i", count)
    """Each process's open connections, in its slot (:mod:`crowdpatch.server.balance`)."""

    def start(index: int) -> BaseProcess:
        connections[index] = 0  # a process that ended took its connections with it
        process = context.Process(
            target=serve_one,
            args=(host, port, uvicorn_options, os.getpid(), connections, index),
            name="crowdpatch-server",
        )
        process.start()
        return process

    processes = [start(index) for index in range(count)]
    try:
        while not stop.wait(0.5):
            for index, process in enumerate(processes):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    raise StartupFailed("a server process could not start")
                print(
                    f"crowdpatch: server process {process.pid} ended (exit {process.exitcode}); starting another",
                    file=sys.stderr,
                    flush=True,
                )
                processes[index] = start(index)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        stop_all(processes)


def stop_all(processes: list[BaseProcess]) -> None:
    """SIGTERM to each (uvicorn's graceful shutdown), then SIGKILL to any still running after :data:`STOP_SECONDS`."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


def serve_one(
    host: str, port: int, uvicorn_options: dict[str, Any], supervisor: int, connections: Any, index: int
) -> None:
    """One server process: its own socket on the shared port, the project's app, uvicorn until told to stop.

    ``connections``: every process's count of open connections, this one's at ``index``: a process holding
    more than its share asks a client now and then to connect anew (:mod:`crowdpatch.server.balance`).
    """
    import uvicorn

    from crowdpatch.server.app import app_from_env
    from crowdpatch.server.balance import ConnectionShare, balanced_protocol

    stop_with(supervisor)
    try:
        sock = listening_socket(host, port, reuse_port=True)
        app = app_from_env()
    except Exception:  # noqa: BLE001 - whatever it is, this process cannot serve: said here, and the server stops
        traceback.print_exc()
        sys.exit(STARTUP_FAILURE)
    protocol = balanced_protocol(ConnectionShare(connections, index))
    server = uvicorn.Server(uvicorn.Config(app, http=protocol, **uvicorn_options))
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def stop_with(supervisor: int) -> None:
    """SIGTERM to this process when ``supervisor``, its parent, ends however it ends (Linux; elsewhere nothing)."""
    if not LINUX:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        return
    if os.getppid() != supervisor:  # it ended before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)
