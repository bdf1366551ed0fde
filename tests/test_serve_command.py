"""`crowdpatch serve` as a user runs it (a real subprocess): the port is checked before any link is printed."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from crowdpatch.cli import EXIT_ERROR
from crowdpatch.config import CONFIG_FILENAME, load_config
from helpers.cli import assert_one_clean_error, can_bind_mount, cli_command, cli_env, read_only_command


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
