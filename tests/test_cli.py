"""The `crowdpatch` command end to end: help, demo, the stepwise pipeline, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from pycocotools.coco import COCO

from crowdpatch.cli import EXIT_ERROR, EXIT_INPUT_PROBLEMS, app
from crowdpatch.config import load_config
from crowdpatch.project import Project
from crowdpatch.summary import headline
from helpers.cli import bomb_png, image_rows, mentions

COMMANDS = ("init", "propose", "simulate", "masks", "status", "workers", "report", "demo", "bench-masks")


def strict_json(path: Path) -> dict:
    """Parse as standard JSON: NaN and Infinity, which Python writes but other readers refuse, are errors."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def project_counts(directory: Path) -> dict[str, int]:
    project = Project.open(directory)
    try:
        return project.counts()
    finally:
        project.close()


@pytest.fixture
def bad_folder(tmp_path: Path, benchmark_files) -> Path:
    """Two good PNGs and one file of each broken kind."""
    images, _, _ = benchmark_files(12, 64)
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(images / "00000.png", folder / "good.png")
    shutil.copy(images / "00001.png", folder / "good2.png")
    whole = (images / "00002.png").read_bytes()
    (folder / "trunc.png").write_bytes(whole[: len(whole) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n", encoding="utf-8")
    bomb_png(folder / "bomb.png")
    return folder


# -- help ------------------------------------------------------------------------------------------


def test_app_help_lists_every_command(run_cli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_mentions_every_option(invoke, command: str) -> None:
    click_command = typer.main.get_command(app).commands[command]
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    options = [opt for param in click_command.params for opt in param.opts if opt.startswith("--")]
    assert options or command in ("propose", "status", "report")
    for option in options:
        assert option in result.stdout, f"{command} --help does not mention {option}"


# -- demo ------------------------------------------------------------------------------------------


def shows_outcome_not_raw_keys(stdout: str, summary: dict) -> bool:
    """The terminal ends with the short table and the headline sentence, not every key of summary.json."""
    return (
        mentions(stdout, headline(summary))
        and "x polygon" in stdout
        and not any(key in stdout for key in ("answers_by_kind", "settings.", "simulated_bans", "latency_seconds"))
    )


@pytest.mark.slow
def test_demo_quick_writes_summary_masks_and_report(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_cli("demo", "--quick", "--images", "8", "--out", out, "--seed", "1", timeout=240)
    assert result.returncode == 0, result.stderr

    summary = strict_json(out / "summary.json")
    assert isinstance(summary["images"], int) and summary["images"] == 8
    assert isinstance(summary["answers"], int) and summary["answers"] > 0
    assert summary["answers_per_image"] == pytest.approx(summary["answers"] / summary["images"])
    assert summary["times_are"] == "modeled"
    seconds = summary["modeled_seconds_per_image"]
    assert set(seconds) >= {"patch", "polygon"}
    assert all(isinstance(seconds[k], float) for k in ("patch", "polygon"))
    assert seconds["patch"] > 0 and seconds["polygon"] > 0
    assert summary["speedup_vs_polygon"] == pytest.approx(seconds["polygon"] / seconds["patch"])
    for source in ("patch", "saliency"):
        iou = summary["mask_iou"][source]
        assert isinstance(iou, float) and 0.0 <= iou <= 1.0
    # The same images and crowd under the adaptive planner, next to the fixed planner's figures.
    adaptive = summary["adaptive"]
    assert set(adaptive) >= {"answers_per_image", "modeled_seconds_per_image", "mask_iou"}
    assert 0.0 <= adaptive["mask_iou"] <= 1.0 and adaptive["modeled_seconds_per_image"] > 0
    assert summary["settings"]["planner"] == "fixed"

    binary = sorted((out / "project" / "masks" / "binary").glob("*.png"))
    assert len(binary) == summary["images"]
    assert (out / "project" / "masks" / "coco.json").is_file()
    report = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "<html" in report.lower() and "modeled" in report and "crowd, adaptive planner" in report

    assert shows_outcome_not_raw_keys(result.stdout, summary)
    # Every pass is named and its bars have totals: the crowd's is counted in images.
    for label in ("fixed planner: simulated crowd, images done", "adaptive planner: simulated crowd, images done"):
        assert label in result.stderr
    assert "8/8" in result.stderr and "/?" not in result.stderr


@pytest.mark.slow
def test_demo_run_again_resumes_and_fresh_starts_over(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert run_cli("demo", "--quick", "--images", "6", "--out", out, timeout=240).returncode == 0
    labels, first_image = out / "data" / "labels.csv", out / "data" / "images" / "00000.png"
    made = (labels.stat().st_mtime_ns, first_image.stat().st_mtime_ns)
    answers = project_counts(out / "project")["answers"]

    again = run_cli("demo", "--quick", "--images", "6", "--out", out, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "generating the built-in benchmark" not in again.stderr
    assert (labels.stat().st_mtime_ns, first_image.stat().st_mtime_ns) == made
    assert project_counts(out / "project")["answers"] == answers
    assert shows_outcome_not_raw_keys(again.stdout, strict_json(out / "summary.json"))

    other = run_cli("demo", "--quick", "--images", "6", "--seed", "3", "--out", out)
    assert other.returncode == EXIT_ERROR and mentions(other.stderr, "--fresh")
    assert labels.stat().st_mtime_ns == made[0]

    (out / "data" / "left-over.txt").write_text("from the previous demo", encoding="utf-8")
    fresh = run_cli("demo", "--quick", "--images", "6", "--seed", "3", "--out", out, "--fresh", timeout=240)
    assert fresh.returncode == 0, fresh.stderr
    assert "generating the built-in benchmark" in fresh.stderr
    assert not (out / "data" / "left-over.txt").exists()
    assert json.loads((out / "demo.json").read_text(encoding="utf-8"))["seed"] == 3


def test_demo_refuses_a_folder_that_holds_something_else(invoke, tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("keep me", encoding="utf-8")
    for extra in ((), ("--fresh",)):
        result = invoke("demo", "--quick", "--out", out, *extra)
        assert result.exit_code == EXIT_ERROR and mentions(result.stderr, "holds no demo")
        assert (out / "mine.txt").read_text(encoding="utf-8") == "keep me"


# -- the stepwise pipeline -------------------------------------------------------------------------


@pytest.mark.slow
def test_stepwise_pipeline_exports_every_format_and_reruns_add_nothing(invoke, tmp_path: Path) -> None:
    directory = tmp_path / "proj"
    # The fixed planner's yes/no and grid votes are what the workers table compares with the aggregate.
    result = invoke(
        "init",
        directory,
        "--builtin",
        "--images-count",
        12,
        "--image-size",
        64,
        "--target",
        "blob",
        "--planner",
        "fixed",
    )
    assert result.exit_code == 0, result.output
    assert (directory / "crowdpatch.toml").is_file()
    assert "blob" in (directory / "crowdpatch.toml").read_text(encoding="utf-8")

    assert invoke("propose", directory).exit_code == 0
    proposed = project_counts(directory)
    assert proposed["questions_open"] > 0 and proposed["answers"] == 0

    # A capped run stops part-way; the next run goes on from there.
    result = invoke("simulate", directory, "--workers", 6, "--max-answers", 40)
    assert result.exit_code == 0, result.output
    partial = project_counts(directory)
    assert partial["answers"] == 40 and partial["questions_open"] > 0
    result = invoke("simulate", directory, "--workers", 6)
    assert result.exit_code == 0, result.output
    finished = project_counts(directory)
    assert finished["questions_open"] == 0 and finished["answers"] > 40
    assert finished.get("images_done") == 12

    result = invoke("masks", directory, "--export", "png", "--export", "npy", "--export", "coco")
    assert result.exit_code == 0, result.output
    assert "IoU" in result.stdout and "Crowd masks: IoU" in result.stdout and "answers_by_kind" not in result.stdout
    masks = directory / "masks"
    binary = {p.stem: p for p in (masks / "binary").glob("*.png")}
    arrays = {p.stem: p for p in (masks / "npy").glob("*.npy")}
    assert len(binary) == 12 and set(arrays) == set(binary)
    for stem, png_path in binary.items():
        png = np.array(Image.open(png_path))
        assert png.shape == (64, 64) and set(np.unique(png)) <= {0, 255}
        soft = np.load(arrays[stem])
        assert soft.dtype == np.float32 and soft.shape == (64, 64)
        assert 0.0 <= soft.min() and soft.max() <= 1.0
        np.testing.assert_array_equal(soft >= 0.5, png > 0)

    coco = COCO(str(masks / "coco.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == 12
    for annotation in annotations:
        image = coco.loadImgs(annotation["image_id"])[0]
        stem = Path(image["file_name"]).stem
        png = np.array(Image.open(binary[stem])) > 0
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), png)

    result = invoke("status", directory)
    assert result.exit_code == 0 and "answers" in result.stdout
    result = invoke("workers", directory, "--csv", tmp_path / "workers.csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "workers.csv")
    assert len(table) == 6 and table["answers"].sum() == finished["answers"]
    assert table["agreement"].between(0, 1).all(), "every simulated worker's votes are compared with the aggregate"
    result = invoke("report", directory)
    assert result.exit_code == 0, result.output
    assert (directory / "report" / "index.html").is_file()
    assert strict_json(directory / "summary.json")["times_are"] == "modeled"
    assert shows_outcome_not_raw_keys(result.stdout, strict_json(directory / "summary.json"))

    # Re-running finished steps asks nothing and stores nothing.
    result = invoke("propose", directory)
    assert result.exit_code == 0 and result.stdout.lstrip().startswith(
        "nothing new to propose (12 images already proposed)"
    )
    result = invoke("simulate", directory, "--workers", 6)
    assert result.exit_code == 0, result.output
    assert project_counts(directory) == finished


def test_report_before_any_answer_writes_valid_json(invoke, benchmark_files, tmp_path: Path) -> None:
    images, labels, masks = benchmark_files(12, 64)
    directory = tmp_path / "proj"
    assert (
        invoke(
            "init", directory, "--images", images, "--labels", labels, "--masks", masks, "--target", "object"
        ).exit_code
        == 0
    )
    assert invoke("propose", directory).exit_code == 0
    result = invoke("report", directory)
    assert result.exit_code == 0, result.output
    summary = strict_json(directory / "summary.json")
    assert summary["answers"] == 0 and summary["times_are"] == "modeled"


# -- bad input -------------------------------------------------------------------------------------


def test_bad_files_and_csv_lines_are_named_and_the_rest_is_imported(run_cli, bad_folder: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,label\n"
        "good.png,blob\n"  # line 2
        "trunc.png,star\n"  # line 3: header intact, pixel data cut
        "zero.jpg,blob\n"  # line 4
        "text.png,star\n"  # line 5
        "bomb.png,blob\n"  # line 6
        "missing.png,star\n"  # line 7
        "good2.png,\n",  # line 8: empty label
        encoding="utf-8",
    )
    directory = tmp_path / "proj"
    init = run_cli("init", directory, "--images", bad_folder, "--labels", labels, "--target", "object")
    assert init.returncode == EXIT_INPUT_PROBLEMS, init.stderr
    for line, name in [(4, "zero.jpg"), (5, "text.png"), (6, "bomb.png"), (7, "missing.png"), (8, "good2.png")]:
        assert mentions(init.stderr, f"labels.csv:{line}") or mentions(init.stderr, name), (line, init.stderr)
    assert mentions(init.stderr, "missing.png")
    assert mentions(init.stderr, "empty label")
    assert mentions(init.stderr, "decompression bomb")
    assert not mentions(init.stderr, "labels.csv:2:")

    propose = run_cli("propose", directory)
    reported = init.stderr + propose.stderr
    assert mentions(reported, "trunc.png") or mentions(init.stderr, "labels.csv:3"), reported
    if not mentions(init.stderr, "labels.csv:3"):
        # A file cut after its header passes the header check at init, and fails when decoded.
        assert propose.returncode == EXIT_INPUT_PROBLEMS, propose.stderr
        assert mentions(propose.stderr, "truncated")

    images = image_rows(directory)
    assert images["good.png"][0] in ("verify", "patch")
    assert set(images) <= {"good.png", "trunc.png"}
    assert images.get("trunc.png", ("error",))[0] == "error"


def test_bad_files_in_a_folder_without_csv_are_named_by_path(invoke, bad_folder: Path, tmp_path: Path) -> None:
    directory = tmp_path / "proj"
    result = invoke("init", directory, "--images", bad_folder, "--target", "object")
    assert result.exit_code == EXIT_INPUT_PROBLEMS, result.output
    for name, reason in [("zero.jpg", "empty file"), ("text.png", "not an image"), ("bomb.png", "decompression bomb")]:
        assert mentions(result.stderr, str(bad_folder / name)), result.stderr
        assert mentions(result.stderr, reason)
    assert set(image_rows(directory)) == {"good.png", "good2.png", "trunc.png"}

    result = invoke("propose", directory)
    assert result.exit_code == EXIT_INPUT_PROBLEMS
    assert mentions(result.stderr, str(bad_folder / "trunc.png"))
    stages = {name: stage for name, (stage, _) in image_rows(directory).items()}
    assert stages["trunc.png"] == "error"
    assert stages["good.png"] != "error" and stages["good2.png"] != "error"


def test_csv_without_label_column_is_refused_naming_the_column(invoke, bad_folder: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,split\ngood.png,train\n", encoding="utf-8")
    directory = tmp_path / "proj"
    result = invoke("init", directory, "--images", bad_folder, "--labels", labels, "--target", "object")
    assert result.exit_code == EXIT_ERROR
    assert mentions(result.stderr, "missing required column(s) label")
    assert mentions(result.stderr, str(labels))
    assert not (directory / "crowdpatch.toml").exists()


def test_empty_folder_is_refused_with_a_clear_message(invoke, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    directory = tmp_path / "proj"
    result = invoke("init", directory, "--images", empty, "--target", "object")
    assert result.exit_code == EXIT_ERROR
    assert mentions(result.stderr, f"no images found in {empty}")
    assert not (directory / "crowdpatch.toml").exists()


def test_init_into_an_existing_project_is_refused(invoke, bad_folder: Path, tmp_path: Path) -> None:
    directory = tmp_path / "proj"
    assert invoke("init", directory, "--images", bad_folder, "--target", "object").exit_code == EXIT_INPUT_PROBLEMS
    config_before = (directory / "crowdpatch.toml").read_bytes()
    result = invoke("init", directory, "--images", bad_folder, "--target", "horse")
    assert result.exit_code == EXIT_ERROR
    assert mentions(result.stderr, "already a crowdpatch project")
    assert (directory / "crowdpatch.toml").read_bytes() == config_before


def test_init_builtin_into_an_existing_project_leaves_its_data_untouched(invoke, tmp_path: Path) -> None:
    directory = tmp_path / "proj"
    assert invoke("init", directory, "--builtin", "--images-count", 4, "--image-size", 32).exit_code == 0
    data = directory / "data"
    before = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    result = invoke("init", directory, "--builtin", "--images-count", 6, "--image-size", 40, "--seed", 7)
    assert result.exit_code == EXIT_ERROR
    assert mentions(result.stderr, "already a crowdpatch project")
    after = {p.relative_to(data): p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert after == before


def test_propose_outside_a_project_is_refused(invoke, tmp_path: Path) -> None:
    result = invoke("propose", tmp_path)
    assert result.exit_code == EXIT_ERROR
    assert mentions(result.stderr, "not a crowdpatch project")
    assert mentions(result.stderr, "crowdpatch init")
    missing = invoke("propose", tmp_path / "nowhere")
    assert missing.exit_code == EXIT_ERROR and mentions(missing.stderr, "not a crowdpatch project")


def test_simulate_without_ground_truth_masks_is_refused_with_the_reason(
    invoke, benchmark_files, tmp_path: Path
) -> None:
    images, labels, _ = benchmark_files(12, 64)
    directory = tmp_path / "proj"
    assert invoke("init", directory, "--images", images, "--labels", labels, "--target", "object").exit_code == 0
    assert invoke("propose", directory).exit_code == 0
    result = invoke("simulate", directory, "--workers", 3)
    assert result.exit_code == EXIT_ERROR
    assert mentions(result.stderr, "no ground-truth mask")
    assert mentions(result.stderr, "--masks")
    assert project_counts(directory)["answers"] == 0


def test_planner_options_are_stored_and_checked(run_cli, tmp_path: Path) -> None:
    made = run_cli(
        "init", tmp_path / "a", "--builtin", "--images-count", "8", "--planner", "adaptive", "--budget-seconds", "30"
    )
    assert made.returncode == 0, made.stderr
    config = load_config(tmp_path / "a")
    assert config.crowd.planner == "adaptive" and config.adaptive.budget_seconds == 30
    refused = run_cli("init", tmp_path / "b", "--builtin", "--images-count", "8", "--budget-seconds", "30")
    assert refused.returncode == EXIT_ERROR
    assert mentions(refused.stderr, "--planner adaptive")


def test_report_curves_plots_every_planner_against_polygons(run_cli, tmp_path: Path) -> None:
    runs = []
    for planner, iou, seconds in (("fixed", 0.55, 130.0), ("fixed", 0.45, 40.0), ("adaptive", 0.5, 60.0)):
        run = tmp_path / f"{planner}-{seconds:g}"
        run.mkdir()
        summary = {
            "dataset": "grabcut",
            "mask_iou": {"patch": iou},
            "modeled_seconds_per_image": {"patch": seconds, "polygon": 79.0},
            "settings": {"planner": planner, "presentation": "grid", "grid_size": 8, "budget_seconds": None},
        }
        (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        runs.append(run)
    args = [a for run in runs for a in ("--curves", run)]
    result = run_cli("report", *args, "--out", tmp_path / "curves")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves" / "curves.png").stat().st_size > 0
    table = (tmp_path / "curves" / "curves.md").read_text(encoding="utf-8")
    assert table.count("| fixed |") == 2 and table.count("| adaptive |") == 1
    assert "0.61x" in table  # 79 s / 130 s
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json", encoding="utf-8")
    bad = run_cli("report", "--curves", broken)
    assert bad.returncode == EXIT_ERROR and mentions(bad.stderr, "not valid JSON")


def test_a_project_named_by_a_relative_path_works_from_any_working_directory(
    invoke, tmp_path: Path, monkeypatch
) -> None:
    """Saliency maps found by `propose proj` from one folder are found again by `masks .` from inside proj."""
    monkeypatch.chdir(tmp_path)
    for args in (("init", "proj", "--builtin", "--images-count", 12), ("propose", "proj"), ("simulate", "proj")):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path / "proj")
    result = invoke("masks", ".")
    assert result.exit_code == 0, result.output
    assert "unreadable" not in result.output
    assert len(list((tmp_path / "proj" / "masks" / "soft").glob("*.png"))) == 12
