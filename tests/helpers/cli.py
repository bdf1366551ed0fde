"""Running the ``crowdpatch`` command as a user does, and reading what it printed and stored."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

from PIL import Image

from crowdpatch.cli import EXIT_ERROR
from crowdpatch.project import Project
from crowdpatch.store.models import ImageRow

CLI_ENV_OVERRIDES = {"COLUMNS": "400", "LINES": "50", "NO_COLOR": "1", "TERM": "xterm"}
"""Wide, colourless, no tty: rich then prints every message on one line, so file names stay whole."""


def cli_env() -> dict[str, str]:
    env = {**os.environ, **CLI_ENV_OVERRIDES}
    for forcing in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(forcing, None)
    return env


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "crowdpatch", *map(str, args)]


def squash(text: str) -> str:
    """Text without whitespace, so a message wrapped by the console still matches."""
    return re.sub(r"\s+", "", text)


def mentions(text: str, needle: str) -> bool:
    return squash(needle) in squash(text)


def image_rows(directory: Path) -> dict[str, tuple[str, str | None]]:
    """File name -> (stage, error) of every image in the project."""
    project = Project.open(directory)
    try:
        with project.sessions() as session:
            rows = session.query(ImageRow).all()
            return {Path(row.path).name: (row.stage, row.error) for row in rows}
    finally:
        project.close()


def bomb_png(path: Path, width: int = 8000, height: int = 8000) -> None:
    """A tiny PNG whose header claims width x height pixels (over the 40-megapixel limit)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    # Signature (8 bytes), then the IHDR chunk: length (4), type (4), 13 bytes of data, CRC (4).
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def assert_one_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit code 1, no traceback, one line starting ``error:`` that mentions every needle."""
    assert result.returncode == EXIT_ERROR, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert mentions(errors[0], needle), (needle, errors[0])


def can_bind_mount() -> bool:
    """Whether a command can run in a mount namespace of its own (root, ``unshare -m``): read-only binds for root."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def read_only_command(directory: Path, command: list[str]) -> list[str]:
    """``command`` run with ``directory`` bind-mounted read-only (EROFS, which binds root too), in its own namespace.

    The mount lives only as long as that one process, so nothing outside it sees it.
    """
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, "sh", str(directory), *command]
