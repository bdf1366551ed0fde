"""`crowdpatch serve` as a user runs it (a real subprocess): the port is checked before any link is printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from crowdpatch.cli import EXIT_ERROR
from crowdpatch.config import CONFIG_FILENAME, load_config
from crowdpatch.server.app import ENV_PROJECT
from crowdpatch.server.processes import StartupFailed, balances_by_port, run_processes
from helpers.cli import assert_one_clean_error, can_bind_mount, cli_command, cli_env, read_only_command
from helpers.live_server import free_port, wait_until_serving


def test_serve_on_a_busy_port_says_so_in_one_line_exits_1_and_prints_no_link(make_project, run_cli):
    project = make_project(n_images=3, size=48)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        result = run_cli("serve", project.directory, "--port", port, timeout=180)
    assert result.returncode == EXIT_ERROR
    assert "http://" not in result.stdout and "invite" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]


@pytest.mark.skipif(not can_bind_mount(), reason="needs root allowed to make a mount namespace (unshare -m)")
def test_serve_on_a_read_only_file_system_says_so_in_one_line_and_exits_1(make_project):
    project = make_project(n_images=3, size=48)
    project.close()  # as a user would have it: nothing of the project open
    result = subprocess.run(
        read_only_command(project.directory, cli_command("serve", project.directory, "--port", "0")),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=180,
    )
    assert_one_clean_error(result, f"project {project.directory}", "database", "the folder is not writable")
    assert result.stdout == ""  # no link to a server that never started


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; the read-only mount test covers root")
def test_serve_on_a_read_only_folder_says_so_in_one_line_and_exits_1(make_project, run_cli):
    project = make_project(n_images=3, size=48)
    project.close()
    os.chmod(project.directory, 0o555)
    try:
        result = run_cli("serve", project.directory, "--port", "0", timeout=180)
    finally:
        os.chmod(project.directory, 0o755)
    assert_one_clean_error(result, f"project {project.directory}", "the folder is not writable")
    assert result.stdout == ""


def test_a_config_that_did_not_change_is_not_written_again_so_serve_restarts_on_a_full_disk(make_project):
    # `serve` saves the config at every start (secrets an older release did not write): a server
    # killed on a full disk must start again without writing anything.
    project = make_project(n_images=3, size=48)
    project.save_config()
    path = project.path(CONFIG_FILENAME)
    before = os.stat(path)
    project.save_config()
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not path.with_suffix(".toml.tmp").exists()
    project.config.server.prolific_completion_code = "CHANGED1"
    project.save_config()
    assert os.stat(path).st_ino != before.st_ino
    assert load_config(project.directory).server.prolific_completion_code == "CHANGED1"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while being read
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _sockets_on_port(pid: int, port: int) -> dict[str, int]:
    """How many of ``pid``'s TCP sockets on local ``port`` are in each state ("0A": listening, "01": connected)."""
    states: dict[str, int] = {}
    try:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6")]
    except OSError:  # the process ended meanwhile
        return states
    inodes = {link[len("socket:[") : -1] for link in links if link.startswith("socket:")}
    for row in (row for table in tables for row in table.splitlines()[1:]):
        fields = row.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
            states[fields[3]] = states.get(fields[3], 0) + 1
    return states


def _response_head(connection: socket.socket) -> bytes:
    """The status line and headers of the response being received on ``connection``."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        assert chunk, "the server closed the connection before its response"
        head += chunk
    return head.split(b"\r\n\r\n", 1)[0] + b"\r\n"


class _KeepAlive:
    """A client on one keep-alive connection at a time: it connects anew when a response says ``Connection: close``."""

    def __init__(self, port: int, api_key: str):
        self.port = port
        self.api_key = api_key  # a requester's requests: not held to the per-address rate limit
        self.connection: socket.socket | None = None
        self.opened = 0

    def get(self, path: str) -> int:
        if self.connection is None:
            self.connection = socket.create_connection(("127.0.0.1", self.port))
            self.opened += 1
        self.connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {self.api_key}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.connection.recv(65536)
            assert chunk, "the server closed the connection without a response"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        headers = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
        while len(body) < int(headers[b"content-length"]):
            body += self.connection.recv(65536)
        if headers.get(b"connection") == b"close":
            self.connection.close()
            self.connection = None
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def _listening_processes(server_pid: int, port: int, count: int, gone: int = 0, timeout: float = 60) -> list[int]:
    """The server's processes once ``count`` of them listen on ``port`` (none of them ``gone``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = [pid for pid in _children(server_pid) if _sockets_on_port(pid, port).get("0A")]
        if len(listening) == count and gone not in listening:
            return listening
        time.sleep(0.2)
    raise AssertionError(f"{count} processes did not listen on port {port}")


def _two_process_server(make_project, start_cli, tmp_path):
    """A project served by `serve --workers 2` on a free port, once both processes listen:
    (project, port, the `serve` process, the two serving processes' pids)."""
    project = make_project(n_images=3, size=48)
    port = free_port()
    server = start_cli(
        "serve", project.directory, "--port", port, "--workers", 2, log=open(tmp_path / "serve.log", "w")
    )
    wait_until_serving(f"http://127.0.0.1:{port}", server)
    return project, port, server, _listening_processes(server.pid, port, 2)


@pytest.mark.skipif(not balances_by_port(), reason="only Linux spreads a port's connections over its sockets")
def test_serve_with_two_processes_spreads_connections_opened_together_and_replaces_a_killed_one(
    make_project, start_cli, run_cli, tmp_path
):
    """Each process listens on a socket of its own (SO_REUSEPORT): opened at once, connections are shared out
    (with one shared socket, the process that woke first accepted 31 of 32). The port stays the server's, a
    process killed is started again, and stopping the server stops them all."""
    project, port, server, processes = _two_process_server(make_project, start_cli, tmp_path)
    url = f"http://127.0.0.1:{port}"

    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    for connection in connections:
        connection.sendall(f"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    heads = [_response_head(connection) for connection in connections]
    assert all(head.startswith(b"HTTP/1.1 200") for head in heads)
    # The busier process may already be asking a client or two to connect anew (test below): those close.
    asked_anew = sum(b"\r\nconnection: close\r\n" in head.lower() for head in heads)
    shares = [_sockets_on_port(pid, port).get("01", 0) for pid in processes]
    for connection in connections:
        connection.close()
    assert sum(shares) == 32 - asked_anew and min(shares) >= 4, shares  # a fair coin gives < 4 of 32 once in 10^6

    again = run_cli("serve", project.directory, "--port", port, timeout=180)
    assert again.returncode == EXIT_ERROR and "in use" in again.stderr

    os.kill(processes[0], signal.SIGKILL)
    replaced = _listening_processes(server.pid, port, 2, gone=processes[0])
    assert processes[1] in replaced
    assert httpx.get(url + "/openapi.json", timeout=10).status_code == 200

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in replaced)


@pytest.mark.skipif(not balances_by_port(), reason="only Linux spreads a port's connections over its sockets")
def test_serve_with_two_processes_evens_out_keep_alive_connections_and_answers_every_request(
    make_project, start_cli, tmp_path
):
    """24 keep-alive connections split by the kernel's hash (as unevenly as 17/7 one time in twenty) end up
    12/12: the busier process closes one now and then after its response, its client connects
    anew. Every request is answered."""
    project, port, server, processes = _two_process_server(make_project, start_cli, tmp_path)
    clients = [_KeepAlive(port, project.config.server.effective_api_key()) for _ in range(24)]
    deadline = time.monotonic() + 60
    try:
        while True:
            assert all(client.get("/api/v1/no-such-thing") == 404 for client in clients)
            shares = [_sockets_on_port(pid, port).get("01", 0) for pid in processes]
            if sum(shares) == 24 and max(shares) - min(shares) <= 1:
                break
            assert time.monotonic() < deadline, f"connections still split {shares}"
    finally:
        for client in clients:
            client.close()
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0


@pytest.mark.skipif(not balances_by_port(), reason="several processes on one port's sockets: Linux only")
def test_serve_killed_outright_leaves_no_server_process_behind(make_project, start_cli, tmp_path):
    """SIGKILL gives `serve` no chance to stop its processes: the kernel tells them (the parent-death signal)."""
    project, port, server, processes = _two_process_server(make_project, start_cli, tmp_path)
    server.kill()
    server.wait(timeout=30)
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in processes)


@pytest.mark.skipif(not balances_by_port(), reason="several processes on one port's sockets: Linux only")
@pytest.mark.timeout(60)  # restarted again and again, it would never return
def test_a_server_process_that_cannot_start_stops_the_server_instead_of_starting_again_and_again(tmp_path, monkeypatch):
    """A process that dies at start (here: no project where the environment says) is not restarted in a loop."""
    monkeypatch.setenv(ENV_PROJECT, str(tmp_path / "no-project-here"))
    with pytest.raises(StartupFailed, match="could not start"):
        run_processes("127.0.0.1", free_port(), 2, {"log_level": "warning"})
