"""Bad files and a failing disk through the real CLI (`init` -> `propose` -> `simulate` -> `masks`).

A folder that mixes images Pillow reads in unusual modes with files that are no usable image must
give masks for the former and a named reason for each of the latter. When the project directory
cannot be written (a file where a folder belongs, a full disk), the command must stop with one
line naming the path and exit code 1, and the SQLite database must stay intact and resumable.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crowdpatch.cli import EXIT_INPUT_PROBLEMS
from helpers.cli import (
    assert_one_clean_error,
    bomb_png,
    can_bind_mount,
    cli_command,
    cli_env,
    image_rows,
    mentions,
    read_only_command,
)

GOOD_ODD_FILES = ("plain.png", "cmyk.jpg", "grey16.png", "palette.png", "png_named.jpg")
"""Images in modes or with names that must load: CMYK JPEG, 16-bit grey PNG, palette PNG, a PNG named .jpg."""


def corrupt_png(source: Path, target: Path) -> None:
    """``source`` with bytes inside its first IDAT chunk inverted: a valid header over broken pixel data."""
    data = bytearray(source.read_bytes())
    start = data.find(b"IDAT") + 20
    for i in range(start, start + 40):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))


@pytest.fixture
def mixed_folder(tmp_path: Path, benchmark_files) -> tuple[Path, Path]:
    """(images, masks): five usable images in odd modes and one file of each broken kind, masks for all stems."""
    images, _, masks = benchmark_files(12, 64)
    folder, mask_folder = tmp_path / "images", tmp_path / "masks"
    folder.mkdir()
    mask_folder.mkdir()
    source = {
        name: images / f"{i:05d}.png"
        for i, name in enumerate([*GOOD_ODD_FILES, "corrupt.png", "trunc.png", "zero.jpg", "text.png", "bomb.png"])
    }
    for name, path in source.items():
        shutil.copy(masks / path.name, mask_folder / f"{Path(name).stem}.png")
    rgb = Image.open(source["plain.png"]).convert("RGB")
    rgb.save(folder / "plain.png")
    Image.open(source["cmyk.jpg"]).convert("RGB").convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    grey = np.asarray(Image.open(source["grey16.png"]).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(folder / "grey16.png")
    Image.open(source["palette.png"]).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "palette.png"
    )
    Image.open(source["png_named.jpg"]).convert("RGB").save(folder / "png_named.jpg", format="PNG")
    corrupt_png(source["corrupt.png"], folder / "corrupt.png")
    whole = source["trunc.png"].read_bytes()
    (folder / "trunc.png").write_bytes(whole[: len(whole) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n", encoding="utf-8")
    bomb_png(folder / "bomb.png")
    # The fixture itself is what the test claims: the odd files really are in those modes.
    assert Image.open(folder / "cmyk.jpg").mode == "CMYK"
    assert Image.open(folder / "grey16.png").mode.startswith("I")
    assert Image.open(folder / "palette.png").mode == "P"
    assert Image.open(folder / "png_named.jpg").format == "PNG"
    return folder, mask_folder


def database_snapshot(directory: Path) -> dict[str, object]:
    """Integrity check result and the rows that matter, read with the sqlite3 module (not our code)."""
    connection = sqlite3.connect(directory / "crowdpatch.db")
    try:
        return {
            "integrity": connection.execute("PRAGMA integrity_check").fetchall(),
            "images": sorted(connection.execute("SELECT path, stage, saliency_path FROM image").fetchall()),
            "tasks": connection.execute("SELECT count(*) FROM task").fetchone()[0],
            "answers": connection.execute("SELECT count(*), sum(seconds) FROM answer").fetchone(),
            "masks": sorted(connection.execute("SELECT image_id, file, iou FROM mask").fetchall()),
        }
    finally:
        connection.close()


@pytest.mark.slow
def test_odd_but_valid_images_become_masks_and_each_bad_file_is_named_with_its_reason(
    run_cli, mixed_folder, tmp_path: Path
) -> None:
    folder, mask_folder = mixed_folder
    directory = tmp_path / "proj"
    init = run_cli("init", directory, "--images", folder, "--masks", mask_folder, "--target", "object")
    assert init.returncode == EXIT_INPUT_PROBLEMS, init.stderr
    for name, reason in [("zero.jpg", "empty file"), ("text.png", "not an image"), ("bomb.png", "decompression bomb")]:
        assert mentions(init.stderr, f"{folder / name}: image unreadable: {reason}"), (name, init.stderr)
    assert "Traceback" not in init.stderr

    # Both pass the header check; their pixel data is broken, which decoding in step 1 finds.
    propose = run_cli("propose", directory)
    assert propose.returncode == EXIT_INPUT_PROBLEMS, propose.stderr
    for name in ("corrupt.png", "trunc.png"):
        assert mentions(propose.stderr, f"{folder / name}: corrupt or truncated image data"), (name, propose.stderr)
    stages = {name: stage for name, (stage, _) in image_rows(directory).items()}
    assert stages == {**{name: stages[name] for name in GOOD_ODD_FILES}, "corrupt.png": "error", "trunc.png": "error"}
    assert all(stages[name] in ("verify", "patch") for name in GOOD_ODD_FILES), stages

    simulate = run_cli("simulate", directory, "--workers", 4)
    assert simulate.returncode == 0, simulate.stderr
    masks = run_cli("masks", directory, "--export", "png")
    assert masks.returncode == 0, masks.stderr
    written = {p.name for p in (directory / "masks" / "binary").glob("*.png")}
    assert written == {f"{Path(name).stem}.png" for name in GOOD_ODD_FILES}
    for path in (directory / "masks" / "binary").glob("*.png"):
        assert np.array(Image.open(path)).shape == (64, 64)
    ious = {row[0]: row[2] for row in database_snapshot(directory)["masks"]}
    assert len(ious) == 5 and all(iou is not None for iou in ious.values())

    # A ground-truth mask damaged after init only costs that image its IoU score: named, the masks still written.
    (mask_folder / "palette.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    again = run_cli("masks", directory, "--export", "png")
    assert again.returncode == EXIT_INPUT_PROBLEMS, again.stderr
    assert mentions(again.stderr, str(mask_folder / "palette.png"))
    assert "Traceback" not in again.stderr
    assert len(list((directory / "masks" / "binary").glob("*.png"))) == 5
    assert sum(iou is None for _, _, iou in database_snapshot(directory)["masks"]) == 1


@pytest.fixture
def initialized_project(invoke, benchmark_files, tmp_path: Path) -> Path:
    """A 12-image built-in project right after `init` (images registered, step 1 not run yet)."""
    images, labels, masks = benchmark_files(12, 64)
    directory = tmp_path / "proj"
    assert (
        invoke(
            "init", directory, "--images", images, "--labels", labels, "--masks", masks, "--target", "object"
        ).exit_code
        == 0
    )
    return directory


def test_a_file_where_the_saliency_folder_belongs_stops_propose_cleanly_and_a_rerun_resumes(
    run_cli, initialized_project: Path
) -> None:
    directory = initialized_project
    before = database_snapshot(directory)
    (directory / "saliency").write_text("in the way\n", encoding="utf-8")
    result = run_cli("propose", directory)
    assert_one_clean_error(result, str(directory / "saliency"), "a file is in the way of a folder")
    assert database_snapshot(directory) == before

    (directory / "saliency").unlink()
    rerun = run_cli("propose", directory)
    assert rerun.returncode == 0, rerun.stderr
    assert all(stage in ("verify", "patch") for stage, _ in image_rows(directory).values())


def test_a_file_where_the_masks_folder_belongs_stops_masks_cleanly_and_keeps_every_answer(
    run_cli, invoke, initialized_project: Path
) -> None:
    directory = initialized_project
    assert invoke("propose", directory).exit_code == 0
    assert invoke("simulate", directory, "--workers", 4).exit_code == 0
    before = database_snapshot(directory)
    assert before["answers"][0] > 0
    (directory / "masks").write_text("in the way\n", encoding="utf-8")
    result = run_cli("masks", directory)
    assert_one_clean_error(result, str(directory / "masks"), "a file is in the way of a folder")
    assert database_snapshot(directory) == before


def _limit_file_size(limit_bytes: int):
    def apply() -> None:
        # Without this the kernel kills the process with SIGXFSZ; ignored, write() fails with EFBIG instead.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_during_propose_fails_cleanly_keeps_the_database_and_a_rerun_finishes(
    run_cli, initialized_project: Path
) -> None:
    """Simulates a full disk with RLIMIT_FSIZE on the real CLI process (works as root, unlike chmod).

    No file of the process may grow past 60 KiB, so SQLite's write-ahead log runs out of room a
    few images into step 1 and every write() beyond it fails (EFBIG, which SQLite reports as a
    disk I/O error). A real full disk fails the same writes with ENOSPC ('database or disk is
    full'); both go through the same handler. Checked by hand on a 300 KiB tmpfs as well.
    """
    directory = initialized_project
    before = database_snapshot(directory)
    result = subprocess.run(
        cli_command("propose", directory),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
        preexec_fn=_limit_file_size(60 * 1024),
    )
    assert_one_clean_error(result, f"project {directory}", "database")
    after = database_snapshot(directory)
    assert after["integrity"] == [("ok",)]
    stages = [stage for _, stage, _ in after["images"]]
    assert stages.count("new") > 0, "the limit must stop step 1 part-way, or this test checks nothing"
    assert after["tasks"] >= before["tasks"]
    for _, stage, saliency in after["images"]:
        # An image is either untouched or complete (its saliency map on disk): never half-written.
        assert (stage == "new" and saliency is None) or (stage in ("verify", "patch") and Path(saliency).is_file())

    rerun = run_cli("propose", directory)
    assert rerun.returncode == 0, rerun.stderr
    assert all(stage in ("verify", "patch") for _, stage, _ in database_snapshot(directory)["images"])


@pytest.mark.skipif(not can_bind_mount(), reason="needs root allowed to make a mount namespace (unshare -m)")
def test_a_read_only_file_system_stops_propose_cleanly(initialized_project: Path) -> None:
    """The project folder bind-mounted read-only (EROFS, which binds root too) in the CLI's own mount namespace.

    The mount lives only as long as that one process, so nothing outside the test sees it.
    """
    directory = initialized_project
    before = database_snapshot(directory)
    result = subprocess.run(
        read_only_command(directory, cli_command("propose", directory)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert_one_clean_error(result, f"project {directory}")
    assert database_snapshot(directory) == before
    assert not (directory / "saliency").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; the read-only mount test covers root")
def test_a_read_only_project_stops_propose_cleanly(run_cli, initialized_project: Path) -> None:
    directory = initialized_project
    before = database_snapshot(directory)
    os.chmod(directory, 0o555)
    try:
        result = run_cli("propose", directory)
    finally:
        os.chmod(directory, 0o755)
    assert_one_clean_error(result, f"project {directory}")
    assert database_snapshot(directory) == before
