"""A project's server on a free local port: in a thread of the test process (for a real browser to talk to), or
a `crowdpatch serve` process to wait for."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from crowdpatch.project import Project
from crowdpatch.server.app import create_app


class LiveServer:
    """uvicorn serving ``project`` at ``self.url`` until :meth:`stop`."""

    def __init__(self, project: Project):
        import uvicorn

        self.project = project
        config = uvicorn.Config(create_app(project), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, process, timeout: float = 60) -> None:
    """Until the server at ``url`` answers; fails if its ``process`` (a Popen) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server at {url} exited with {process.returncode}"
        try:
            if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server at {url} did not start")
