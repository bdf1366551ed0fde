"""`crowdpatch bench-masks` on real photos with ground-truth masks (../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATASETS = {
    "weizmann_horse": ("rgb", "figure_ground"),
    "grabcut": ("images", "masks"),
}
LIMIT = 6


def bench(run_cli, shared_data: Path, dataset: str, out: Path, *extra: str) -> dict:
    images, masks = (shared_data / dataset / sub for sub in DATASETS[dataset])
    if not images.is_dir() or not masks.is_dir():
        pytest.skip(f"{dataset} not found under {shared_data}")
    result = run_cli(
        "bench-masks", "--images", images, "--masks", masks, "--out", out,
        "--limit", LIMIT, "--workers", 5, *extra, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "report" / "index.html").is_file()
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def check_summary(summary: dict, presentation: str) -> None:
    assert summary["images"] == LIMIT
    assert summary["answers"] > 0
    assert summary["times_are"] == "modeled"
    assert summary["modeled_seconds_per_image"]["patch"] > 0
    iou = summary["mask_iou"]["patch"]
    assert isinstance(iou, float) and 0.0 <= iou <= 1.0
    assert summary["settings"]["presentation"] == presentation


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_bench_masks_single_presentation_on_real_photos(
    run_cli, shared_data: Path, tmp_path: Path, dataset: str
) -> None:
    out = tmp_path / "bench"
    summary = bench(run_cli, shared_data, dataset, out, "--planner", "fixed", "--presentation", "single")
    check_summary(summary, "single")
    assert summary["answers_by_kind"].get("patch", 0) > 0
    assert len(list((out / "project" / "masks" / "binary").glob("*.png"))) == LIMIT


@pytest.mark.slow
def test_bench_masks_fixed_planner_uses_the_grid_presentation_by_default(
    run_cli, shared_data: Path, tmp_path: Path
) -> None:
    summary = bench(run_cli, shared_data, "weizmann_horse", tmp_path / "bench", "--planner", "fixed")
    check_summary(summary, "grid")
    assert summary["answers_by_kind"].get("grid", 0) > 0
    assert "patch" not in summary["answers_by_kind"], "grid presentation asks no single windows"


@pytest.mark.slow
def test_bench_masks_runs_the_precise_planner_by_default(run_cli, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    summary = bench(run_cli, shared_data, "grabcut", out)
    check_summary(summary, "grid")
    assert summary["settings"]["planner"] == "precise"
    asked = summary["answers_by_kind"]
    assert asked.get("extreme", 0) >= LIMIT and asked.get("pick", 0) >= 1
    assert summary["complete"]
    assert list((out / "project" / "candidates").glob("*.png")), "the candidate masks are kept beside the project"
