"""bench/load.py's reading of how the workers' connections split over the server processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchkit  # noqa: E402 - the bench folder is not a package

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")

HOLDER = """
import socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
print("ready", flush=True)
held = [listener.accept()[0] for _ in range(int(sys.argv[2]))]
listener.close()  # the next holder listens on the port for its own share
print("held", flush=True)
sys.stdin.read()
"""


def test_connections_are_counted_per_process_that_holds_them_most_first():
    """Two processes serve one port's connections, 3 and 1: the split reads [3, 1]; the clients' ends and
    the listening sockets do not count."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    holders, clients = [], []
    try:
        for count in (3, 1):
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(port), str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(holder)
            assert holder.stdout.readline().strip() == "ready"
            clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
            assert holder.stdout.readline().strip() == "held"
        assert benchkit.connections_per_process(port) == [3, 1]
    finally:
        for client in clients:
            client.close()
        for holder in holders:
            holder.kill()
            holder.wait()
