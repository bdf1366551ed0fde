"""`crowdpatch train`, `crowdpatch experiment` and `python -m crowdpatch.train` under torchrun, end to end.

Trainings are tiny (16 images of 32 px, smallcnn, one epoch): the checks are about what gets written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.store.models import ImageRow
from crowdpatch.train.commands import LOSS_NAMES
from crowdpatch.train.data import GUIDES
from crowdpatch.train.losses import AUGMENTATIONS, PENALTIES
from crowdpatch.train.models import create_model
from crowdpatch.train.tensors import SplitTensors, load_splits_file, save_experiment_tensors, save_splits
from helpers.cli import cli_env, squash

METRICS = ("accuracy", "worst_group", "energy_in_mask", "pointing_game", "cam_iou")


def strict_json(path: Path) -> dict:
    """Standard JSON only: NaN and Infinity, which Python writes but other readers refuse, are errors."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labelled_project(tmp_path_factory, benchmark_files) -> Path:
    """16 built-in images of 32 px with ground-truth masks (enough for the none and gt guides)."""
    images, labels, masks = benchmark_files(16, 32)
    directory = tmp_path_factory.mktemp("train-cli") / "proj"
    config = ProjectConfig(name="proj", target="object", images_dir=str(images), masks_dir=str(masks))
    project = Project.create(directory, config)
    try:
        assert add_images(project, load_folder_dataset(images, labels, masks).records).added == 16
    finally:
        project.close()
    return directory


# -- help ------------------------------------------------------------------------------------------


def test_loss_names_in_the_cli_match_the_registered_losses() -> None:
    assert sorted(LOSS_NAMES) == sorted([*PENALTIES, *AUGMENTATIONS])


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_help_lists_the_guides_and_the_losses(invoke, command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    text = squash(result.stdout)
    for option in ("--guide", "--loss", "--lambda", "--model", "--epochs", "--device", "--tensors", "--export-tensors"):
        assert option in text
    for name in (*GUIDES, *LOSS_NAMES, "bgswap+cam"):
        assert name in text, name


# -- train -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_subprocess_writes_metrics_and_weights_of_the_run(
    run_cli, labelled_project: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    result = run_cli(
        "train",
        labelled_project,
        "--guide",
        "gt",
        "--epochs",
        1,
        "--image-size",
        32,
        "--batch-size",
        8,
        "--device",
        "cpu",
        "--runs",
        runs,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    run = runs / "gt-bgswap_cam-smallcnn-seed0"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.json", "model.pt"]
    metrics = strict_json(run / "metrics.json")
    assert metrics["config"]["guide"] == "gt" and metrics["config"]["epochs"] == 1
    assert metrics["best_epoch"] == 1 and len(metrics["history"]) == 1
    for name in METRICS:
        assert 0.0 <= metrics["test"][name] <= 1.0, name
    model = create_model("smallcnn", 2, 32)
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    assert "gt-bgswap_cam-smallcnn-seed0" in result.stdout and "worst group" in result.stdout


def test_train_default_runs_go_into_the_project(invoke, labelled_project: Path) -> None:
    result = invoke("train", labelled_project, "--guide", "none", "--epochs", 1, "--image-size", 32, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (labelled_project / "runs" / "none-none-smallcnn-seed0" / "metrics.json").is_file()


def test_train_with_an_unknown_guide_or_loss_fails_with_the_reason(
    invoke, labelled_project: Path, tmp_path: Path
) -> None:
    result = invoke("train", labelled_project, "--guide", "polygons", "--epochs", 1, "--runs", tmp_path)
    assert result.exit_code == 1 and "unknownguide'polygons'" in squash(result.stderr)
    result = invoke(
        "train",
        labelled_project,
        "--guide",
        "gt",
        "--loss",
        "cam+dropout",
        "--epochs",
        1,
        "--image-size",
        32,
        "--device",
        "cpu",
        "--runs",
        tmp_path,
    )
    assert result.exit_code == 1 and "unknownloss'dropout'" in squash(result.stderr)
    assert not list(tmp_path.iterdir())


def test_train_with_a_missing_weights_file_fails_with_the_reason(
    invoke, labelled_project: Path, tmp_path: Path
) -> None:
    result = invoke(
        "train",
        labelled_project,
        "--guide",
        "gt",
        "--epochs",
        1,
        "--image-size",
        32,
        "--device",
        "cpu",
        "--weights",
        tmp_path / "nowhere.pt",
        "--runs",
        tmp_path / "runs",
    )
    assert result.exit_code == 1 and "no such weights file" in result.stderr


# -- experiment ------------------------------------------------------------------------------------


def assert_experiment_written(out: Path, guides: list[str]) -> dict:
    assert {"results.json", "worst_group.png", "cams.png", "index.html"} <= {p.name for p in out.iterdir()}
    results = strict_json(out / "results.json")
    assert list(results["table"]) == guides
    for guide in guides:
        assert set(results["table"][guide]) == set(METRICS)
        assert results["table"][guide]["worst_group"]["n"] == 1
    assert [run["config"]["guide"] for run in results["runs"]] == guides
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'src="worst_group.png"' in page and 'src="cams.png"' in page
    for guide in guides:
        assert f"<th>{guide}</th>" in page
    return results


def test_experiment_writes_table_plots_and_page(invoke, labelled_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "experiment"
    result = invoke(
        "experiment",
        labelled_project,
        "--guides",
        "none,gt",
        "--seeds",
        1,
        "--epochs",
        1,
        "--image-size",
        32,
        "--device",
        "cpu",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert_experiment_written(out, ["none", "gt"])
    assert "| none |" in result.stdout and "| gt |" in result.stdout


def test_experiment_from_exported_tensors_gives_the_same_kind_of_table(
    invoke, labelled_project: Path, tmp_path: Path
) -> None:
    tensors = tmp_path / "experiment.pt"
    result = invoke(
        "experiment", labelled_project, "--guides", "none,gt", "--image-size", 32, "--export-tensors", tensors
    )
    assert result.exit_code == 0, result.output
    assert tensors.is_file() and [p.name for p in tmp_path.iterdir()] == ["experiment.pt"]

    from_project = tmp_path / "from-project"
    assert (
        invoke(
            "experiment",
            labelled_project,
            "--guides",
            "none,gt",
            "--seeds",
            1,
            "--epochs",
            1,
            "--image-size",
            32,
            "--device",
            "cpu",
            "--out",
            from_project,
        ).exit_code
        == 0
    )
    from_tensors = tmp_path / "from-tensors"
    result = invoke(
        "experiment",
        "--tensors",
        tensors,
        "--guides",
        "none,gt",
        "--seeds",
        1,
        "--epochs",
        1,
        "--image-size",
        32,
        "--device",
        "cpu",
        "--out",
        from_tensors,
    )
    assert result.exit_code == 0, result.output
    expected = assert_experiment_written(from_project, ["none", "gt"])
    got = assert_experiment_written(from_tensors, ["none", "gt"])
    # The same images, masks and seeds: the same runs, whichever way the data came in.
    for mine, theirs in zip(got["runs"], expected["runs"], strict=True):
        for mine_epoch, their_epoch in zip(mine["history"], theirs["history"], strict=True):
            assert mine_epoch == pytest.approx(their_epoch, abs=1e-4)


SERVER_PACKAGES = ("sqlalchemy", "alembic", "fastapi", "starlette", "crowdkit", "pycocotools", "cv2", "pandas")
"""What a GPU machine with only PyTorch lacks: `python -m crowdpatch.train experiment` must not need them."""


def test_experiment_runs_from_tensors_where_only_pytorch_is_installed(tmp_path: Path) -> None:
    tensors = tmp_path / "experiment.pt"
    save_experiment_tensors({"gt": load_splits_file(tiny_tensors_file(tmp_path / "splits.pt"))}, tensors)
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in SERVER_PACKAGES)  # import raises ImportError
    args = ["experiment", "--tensors", str(tensors), "--guides", "gt", "--seeds", "1", "--epochs", "1"]
    args += ["--image-size", "32", "--device", "cpu", "--out", str(tmp_path / "out")]
    script = f"import runpy, sys; {block}; sys.argv = ['crowdpatch.train', *{args!r}]; "
    script += "runpy.run_module('crowdpatch.train', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert_experiment_written(tmp_path / "out", ["gt"])
    assert "| gt |" in result.stdout


# -- torchrun --------------------------------------------------------------------------------------


def tiny_tensors_file(path: Path, n: int = 32, size: int = 32) -> Path:
    """32 hand-made images of 32 px: a bright square object, the class in its shade."""
    g = torch.Generator().manual_seed(0)

    def split(count: int, guided: bool) -> SplitTensors:
        labels = torch.arange(count) % 2
        gt = torch.zeros(count, 1, size, size)
        for i in range(count):
            top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
            gt[i, :, top : top + size // 2, left : left + size // 2] = 1
        images = torch.randn(count, 3, size, size, generator=g) * 0.3 + gt * (1 + labels.float())[:, None, None, None]
        return SplitTensors(
            images=images,
            labels=labels,
            groups=labels * 2 + (torch.arange(count) // 2) % 2,
            guides=(gt == 1).float() if guided else torch.zeros_like(gt),
            has_guide=torch.full((count,), guided),
            gt=gt,
            class_names=["a", "b"],
            group_names=["a|bg=0", "a|bg=1", "b|bg=0", "b|bg=1"],
            names=[f"{i:05d}.png" for i in range(count)],
        )

    save_splits({"train": split(n, True), "val": split(8, False), "test": split(8, False)}, path)
    return path


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_and_only_rank_0_writes_the_run(tmp_path: Path) -> None:
    tensors = tiny_tensors_file(tmp_path / "splits.pt")
    runs = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "crowdpatch.train",
        "--tensors",
        str(tensors),
        "--guide",
        "gt",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--runs",
        str(runs),
    ]
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert [p.name for p in runs.iterdir()] == ["gt-bgswap_cam-smallcnn-seed0"]
    metrics = strict_json(runs / "gt-bgswap_cam-smallcnn-seed0" / "metrics.json")
    assert len(metrics["history"]) == 1 and 0.0 <= metrics["test"]["worst_group"] <= 1.0
    assert result.stdout.count("run written to") == 1
    assert not (tmp_path / "runs" / "runs").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "runs",
        "splits.pt",
    ]
    assert os.path.getsize(runs / "gt-bgswap_cam-smallcnn-seed0" / "model.pt") > 0


# -- refused before any run ------------------------------------------------------------------------


@pytest.fixture
def fresh_labelled_project(tmp_path: Path, benchmark_files) -> Path:
    """A labelled project of 16 built-in images that a test may change."""
    images, labels, masks = benchmark_files(16, 32)
    config = ProjectConfig(name="proj", target="object", images_dir=str(images), masks_dir=str(masks))
    project = Project.create(tmp_path / "proj", config)
    try:
        add_images(project, load_folder_dataset(images, labels, masks).records)
    finally:
        project.close()
    return tmp_path / "proj"


def experiment_args(project: Path, out: Path, guides: str) -> list:
    return [
        "experiment", project, "--guides", guides, "--seeds", 1, "--epochs", 1, "--image-size", 32,
        "--device", "cpu", "--out", out,
    ]  # fmt: skip


def test_experiment_before_masks_are_built_says_so_and_starts_no_run(invoke, fresh_labelled_project, tmp_path):
    out = tmp_path / "experiment"
    result = invoke(*experiment_args(fresh_labelled_project, out, "none,patch"))
    assert result.exit_code == 1
    assert "no patch masks yet" in result.output and "crowdpatch masks" in result.output
    assert not out.exists()


def test_experiment_on_a_training_split_without_a_class_names_it_and_starts_no_run(
    invoke, fresh_labelled_project, tmp_path
):
    project = Project.open(fresh_labelled_project)
    try:
        with project.sessions.begin() as session:
            train = session.scalars(select(ImageRow).where(ImageRow.split == "train")).all()
            victim = train[0].label
            for image in train:
                if image.label == victim:
                    image.split = "test"
    finally:
        project.close()
    out = tmp_path / "experiment"
    result = invoke(*experiment_args(fresh_labelled_project, out, "none,gt"))
    assert result.exit_code == 1
    assert "'train'splithasnoimagesofclass" in squash(result.output) and victim in result.output
    assert not out.exists()
