"""Shared fixtures: the shared data sets, small built-in projects, and the CLI run two ways.

The CLI is driven both in process (typer's CliRunner: fast, for most checks) and as a real
subprocess (``python -m crowdpatch``: what a user runs, and the only way to kill a run for real).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from crowdpatch.cli import app
from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import BenchmarkSpec, generate_benchmark, load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose
from helpers.browser import CHROMIUM
from helpers.cli import CLI_ENV_OVERRIDES, cli_command, cli_env
from helpers.postgres import fresh_schema

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (Weizmann horse, GrabCut, ...) next to the repository."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA} (expected next to the repository)")
    return SHARED_DATA


BenchmarkFiles = tuple[Path, Path, Path]


@pytest.fixture(scope="session")
def benchmark_files(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., BenchmarkFiles]:
    """``benchmark_files(n, size)`` -> (images dir, labels.csv, masks dir) of the built-in benchmark.

    Each benchmark is written once per session.
    """
    cache: dict[tuple[int, int, int], BenchmarkFiles] = {}

    def make(n_images: int = 12, size: int = 64, seed: int = 0) -> BenchmarkFiles:
        key = (n_images, size, seed)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"benchmark-{n_images}x{size}-s{seed}")
            labels = generate_benchmark(out, BenchmarkSpec(n_images=n_images, size=size, seed=seed))
            cache[key] = (out / "images", labels, out / "masks")
        return cache[key]

    return make


@pytest.fixture
def make_project(tmp_path: Path, benchmark_files) -> Callable[..., Project]:
    """``make_project(n_images, size, configure=fn, proposed=True)``: a built-in project made with the library API."""
    projects: list[Project] = []

    def make(
        n_images: int = 12,
        size: int = 64,
        configure: Callable[[ProjectConfig], None] | None = None,
        proposed: bool = True,
        name: str = "proj",
    ) -> Project:
        images, labels, masks = benchmark_files(n_images, size)
        config = ProjectConfig(name=name, target="object", images_dir=str(images), masks_dir=str(masks))
        if configure is not None:
            configure(config)
        project = Project.create(tmp_path / name, config)
        projects.append(project)
        dataset = load_folder_dataset(images, labels, masks)
        report = add_images(project, dataset.records)
        assert report.added == n_images and not report.problems
        if proposed:
            assert not propose(project).problems
        return project

    yield make
    for project in projects:
        project.close()


@pytest.fixture
def builtin_project(make_project) -> Project:
    """12 built-in images of 64 px, step 1 done (verification and gold questions open)."""
    return make_project()


@pytest.fixture
def postgres_schema():
    """A URL to a fresh schema of the test PostgreSQL, dropped afterwards (the test is skipped without a server)."""
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> str | None:
    """A project's ``db_url``, once per backend: its SQLite file (None), then a fresh PostgreSQL schema.

    The PostgreSQL run is skipped without a server.
    """
    return request.getfixturevalue("postgres_schema") if request.param == "postgresql" else None


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, timeout=120)``: ``python -m crowdpatch ARGS`` as a real subprocess, no tty."""

    def run(
        *args: str | os.PathLike[str], timeout: float = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=timeout,
            cwd=cwd,
        )

    return run


@pytest.fixture
def start_cli():
    """``start_cli(*args, log=file)``: ``python -m crowdpatch ARGS`` started in the background (a Popen), no tty."""
    children: list[subprocess.Popen] = []

    def start(*args: str | os.PathLike[str], log) -> subprocess.Popen:
        child = subprocess.Popen(
            cli_command(*args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=cli_env()
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)


@pytest.fixture
def invoke():
    """``invoke(*args)``: the typer app in process; the result has ``exit_code``, ``stdout``, ``stderr``."""
    runner = CliRunner()

    def run(*args: str | os.PathLike[str]):
        return runner.invoke(app, [str(a) for a in args], env=CLI_ENV_OVERRIDES, catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def landscape_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 320x200 'photos' (a brown object on foliage under a sky, cut three ways).

    They are wider than high, as most photos are.
    """
    from PIL import ImageOps

    from crowdpatch.server.examples import scene

    folder = tmp_path_factory.mktemp("landscape-photos")
    photo = scene().photo
    for index, (box, mirrored) in enumerate(
        (((0, 80, 640, 480), False), ((0, 80, 640, 480), True), ((80, 120, 560, 420), False))
    ):
        picture = photo.crop(box)
        picture = ImageOps.mirror(picture) if mirrored else picture
        picture.resize((320, 200)).save(folder / f"photo-{index}.png")
    return folder


@pytest.fixture
def photo_project(tmp_path: Path, landscape_photos: Path) -> Callable[..., Project]:
    """``photo_project(configure=fn)``: a project named 'horses' looking for a horse in :func:`landscape_photos`.

    Step 1 is done.
    """
    projects: list[Project] = []

    def make(configure: Callable[[ProjectConfig], None] | None = None) -> Project:
        config = ProjectConfig(name="horses", target="horse", images_dir=str(landscape_photos))
        if configure is not None:
            configure(config)
        project = Project.create(tmp_path / "horses", config)
        projects.append(project)
        assert add_images(project, load_folder_dataset(landscape_photos).records).added == 3
        assert not propose(project).problems
        return project

    yield make
    for project in projects:
        project.close()


# -- browser tests (Debian's chromium, driven by Playwright) ------------------------------------


@pytest.fixture
def one_torch_thread():
    """The CPU is small and shared: one thread keeps tiny trainings fast and timings stable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def patient_expectations() -> None:
    """Playwright's assertions wait up to 15 s (not 5): on a busy 2-core machine a server round trip under load
    can take longer than 5 s, and a browser test checks what the page shows, not how fast."""
    try:
        from playwright.sync_api import expect
    except ImportError:
        return
    expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": ["--disable-gpu", "--disable-quic"]}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Screenshots to look at: ``CROWDPATCH_SCREENSHOTS`` when set, else a pytest temp folder."""
    folder = Path(os.environ.get("CROWDPATCH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
