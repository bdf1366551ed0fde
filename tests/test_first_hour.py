"""A researcher's first steps with their own photos: masks read right, nothing silently meaningless,
outputs named after the inputs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from crowdpatch.cli import EXIT_ERROR
from crowdpatch.config import load_config
from crowdpatch.project import Project
from crowdpatch.store.models import TaskRow
from helpers.masks import voc_palette


def _photo_folder(benchmark_files, tmp_path: Path, n: int, mask_style: str) -> tuple[Path, Path]:
    """``n`` built-in photos as JPEGs named 000.jpg, 001.jpg, ..., with masks written in ``mask_style``."""
    images, _, masks = benchmark_files(12, 64)
    photos, truths = tmp_path / "photos", tmp_path / "gt"
    photos.mkdir()
    truths.mkdir()
    for i, source in enumerate(sorted(images.iterdir())[:n]):
        Image.open(source).convert("RGB").save(photos / f"{i:03d}.jpg", quality=95)
        obj = np.asarray(Image.open(masks / source.name)) > 127
        if mask_style == "davis":
            truth = Image.fromarray(obj.astype(np.uint8), mode="P")
            truth.putpalette(voc_palette())
        elif mask_style == "empty":
            truth = Image.fromarray(np.zeros(obj.shape, np.uint8))
        else:
            truth = Image.fromarray(obj.astype(np.uint8) * 255)
        truth.save(truths / f"{i:03d}.png")
    return photos, truths


def _questions(directory: Path, kind: str) -> list[TaskRow]:
    project = Project.open(directory)
    try:
        with project.sessions() as session:
            return list(session.query(TaskRow).filter(TaskRow.kind == kind))
    finally:
        project.close()


def test_davis_palette_masks_drive_the_whole_pipeline(tmp_path: Path, benchmark_files, invoke) -> None:
    photos, truths = _photo_folder(benchmark_files, tmp_path, 6, "davis")
    directory = tmp_path / "proj"
    result = invoke("init", directory, "--images", photos, "--masks", truths, "--target", "blob")
    assert result.exit_code == 0, result.output
    assert "6 masks: palette, objects in 6" in result.stdout
    assert invoke("propose", directory).exit_code == 0
    gold = _questions(directory, "gold")
    # Read as colours, every DAVIS mask would be empty and every gold question would expect "no".
    assert {task.gold_answer for task in gold} == {"yes", "no"}
    assert invoke("simulate", directory, "--workers", "8").exit_code == 0
    assert invoke("masks", directory).exit_code == 0
    assert invoke("report", directory).exit_code == 0
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["complete"] is True and summary["images_scored"] == 6
    assert summary["images_without_object_in_truth"] == 0
    assert 0.2 < summary["mask_iou"]["patch"] < 1.0


def test_empty_truths_are_warned_about_scored_apart_and_make_no_gold(tmp_path: Path, benchmark_files, invoke) -> None:
    photos, truths = _photo_folder(benchmark_files, tmp_path, 4, "empty")
    directory = tmp_path / "proj"
    result = invoke("init", directory, "--images", photos, "--masks", truths, "--target", "blob")
    assert result.exit_code == 0
    assert "most ground truths hold no object: 4 of 4 (000.png, 001.png, 002.png, ...)" in result.stderr
    assert invoke("propose", directory).exit_code == 0
    assert _questions(directory, "gold") == []
    assert invoke("simulate", directory, "--workers", "6").exit_code == 0
    assert invoke("report", directory).exit_code == 0
    summary = json.loads((directory / "summary.json").read_text())
    # An empty crowd mask against an empty truth is not a perfect score: no score at all.
    assert summary["mask_iou"]["patch"] is None and summary["images_scored"] == 0
    assert summary["images_without_object_in_truth"] == 4


def test_propose_twice_says_nothing_is_new(tmp_path: Path, benchmark_files, invoke) -> None:
    photos, truths = _photo_folder(benchmark_files, tmp_path, 3, "binary")
    directory = tmp_path / "proj"
    assert invoke("init", directory, "--images", photos, "--masks", truths, "--target", "blob").exit_code == 0
    assert invoke("propose", directory).exit_code == 0
    again = invoke("propose", directory)
    assert again.exit_code == 0 and "nothing new to propose (3 images already proposed)" in again.stdout


def test_masks_of_an_unfinished_study_say_so_in_one_line_and_in_the_summary(
    tmp_path: Path, benchmark_files, invoke
) -> None:
    photos, truths = _photo_folder(benchmark_files, tmp_path, 3, "binary")
    directory = tmp_path / "proj"
    assert invoke("init", directory, "--images", photos, "--masks", truths, "--target", "blob").exit_code == 0
    assert invoke("propose", directory).exit_code == 0
    before = invoke("report", directory)
    assert "No answers yet for 3 images" in before.stdout
    assert invoke("simulate", directory, "--max-answers", "5").exit_code == 0
    during = invoke("report", directory)
    assert "incomplete:" in during.stdout and "questions still open" in during.stdout
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["complete"] is False and summary["open_questions"] > 0 and summary["answers"] == 5


def test_masks_keep_the_input_names_and_repeated_stems_stay_apart(tmp_path: Path, benchmark_files, invoke) -> None:
    photos, truths = _photo_folder(benchmark_files, tmp_path, 3, "binary")
    # A second folder with a photo of the same stem, and a mask of the same relative path.
    (photos / "more").mkdir()
    (truths / "more").mkdir()
    shutil.copy(photos / "001.jpg", photos / "more" / "001.jpg")
    shutil.copy(truths / "001.png", truths / "more" / "001.png")
    directory = tmp_path / "proj"
    assert invoke("init", directory, "--images", photos, "--masks", truths, "--target", "blob").exit_code == 0
    assert invoke("propose", directory).exit_code == 0
    assert invoke("simulate", directory, "--workers", "6").exit_code == 0
    assert invoke("masks", directory, "--export", "png", "--export", "npy").exit_code == 0
    binary = sorted(p.name for p in (directory / "masks" / "binary").iterdir())
    assert binary == ["000.png", "001.png", "002.png", "more_001.png"]
    with (directory / "masks" / "index.csv").open() as handle:
        rows = {Path(row["image"]).relative_to(photos).as_posix(): row for row in csv.DictReader(handle)}
    assert rows["more/001.jpg"]["binary"] == "binary/more_001.png"
    assert rows["001.jpg"]["npy"] == "npy/001.npy" and rows["001.jpg"]["soft"] == "soft/001.png"


def test_init_takes_the_target_from_labels_or_asks_for_it(tmp_path: Path, benchmark_files, invoke) -> None:
    photos, _ = _photo_folder(benchmark_files, tmp_path, 2, "binary")
    several = tmp_path / "several.csv"
    several.write_text("path,label\n000.jpg,horse\n001.jpg,cow\n")
    refused = invoke("init", tmp_path / "a", "--images", photos, "--labels", several)
    assert refused.exit_code == EXIT_ERROR and "give --target" in refused.stderr and "horse" in refused.stderr
    assert not (tmp_path / "a" / "crowdpatch.toml").exists()
    one = tmp_path / "one.csv"
    one.write_text("path,label\n000.jpg,horse\n001.jpg,not_horse\n")
    made = invoke("init", tmp_path / "b", "--images", photos, "--labels", one)
    assert made.exit_code == 0 and "target 'horse'" in made.stdout
    assert load_config(tmp_path / "b").target == "horse"


def test_a_mask_folder_missing_some_images_names_them_and_goes_on(tmp_path: Path, benchmark_files, invoke) -> None:
    photos, truths = _photo_folder(benchmark_files, tmp_path, 4, "binary")
    (truths / "002.png").unlink()
    result = invoke("init", tmp_path / "proj", "--images", photos, "--masks", truths, "--target", "blob")
    assert result.exit_code == 0 and "created project" in result.stdout and ": 4 images" in result.stdout
    assert "1 images have no mask in the masks folder (002.jpg)" in result.stderr
    assert "3 masks: 0/255, objects in 3" in result.stdout
