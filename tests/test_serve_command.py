"""`crowdpatch serve` as a user runs it (a real subprocess): the port is checked before any link is printed."""

from __future__ import annotations

import socket

from crowdpatch.cli import EXIT_ERROR


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
