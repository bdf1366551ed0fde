"""The real cut-out benchmark end to end, tiny: build it, crowdsource it with two planners, compare every guide.

The full-size run (1,600 images, 3 seeds, docs/benchmarks.md "Real cut-outs") is the same commands
with the defaults; here everything is small enough for a CPU in about a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crowdpatch.datasets import CUTOUT_DEFAULTS, SHAPES_DEFAULTS, CutoutSource, builtin_spec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real test data not found at {DATA}")
HORSES = f"horse={DATA / 'weizmann_horse' / 'rgb'}:{DATA / 'weizmann_horse' / 'figure_ground'}"
COCO = f"coco={DATA / 'coco_mval_subset' / 'img'}:{DATA / 'coco_mval_subset' / 'gt'}"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cutouts_take_their_own_defaults_and_anything_given_wins(tmp_path: Path) -> None:
    sources = (CutoutSource("a", tmp_path, tmp_path), CutoutSource("b", tmp_path, tmp_path))
    real = builtin_spec(sources)
    assert (real.n_images, real.size, real.object_scale) == (
        CUTOUT_DEFAULTS["n_images"],
        CUTOUT_DEFAULTS["size"],
        CUTOUT_DEFAULTS["object_scale"],
    )
    shapes = builtin_spec()
    assert (shapes.n_images, shapes.size, shapes.object_scale) == (1500, 64, SHAPES_DEFAULTS["object_scale"])
    given = builtin_spec(sources, n_images=10, size=96, object_scale=(0.3, 0.4), agreement=0.9, seed=3)
    assert (given.n_images, given.size, given.object_scale, given.agreement, given.seed) == (10, 96, (0.3, 0.4), 0.9, 3)


@needs_data
def test_init_with_cutouts_draws_objects_at_the_scale_asked(invoke, tmp_path: Path) -> None:
    project = tmp_path / "cut"
    result = invoke(
        "init", project, "--builtin", "--cutouts", HORSES, "--cutouts", COCO, "--images-count", 8, "--image-size", 80,
        "--object-scale", 0.5, 0.5,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for mask_file in sorted((project / "data" / "masks").iterdir()):
        mask = np.asarray(Image.open(mask_file)) > 127
        assert mask.shape == (80, 80)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert 36 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 40  # half of 80 px, edge pixels aside


@pytest.mark.slow
@needs_data
def test_a_tiny_cutout_benchmark_runs_end_to_end_with_every_guide(invoke, tmp_path: Path) -> None:
    precise, fixed = tmp_path / "cut", tmp_path / "cut-fixed"
    assert (
        invoke("init", precise, "--builtin", "--cutouts", HORSES, "--cutouts", COCO, "--images-count", 24).exit_code
        == 0
    )
    data = precise / "data"
    result = invoke(
        "init", fixed, "--images", data / "images", "--labels", data / "labels.csv", "--masks", data / "masks",
        "--target", "object", "--planner", "fixed",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for project in (precise, fixed):
        for step in ("propose", "simulate", "masks"):
            result = invoke(step, project)
            assert result.exit_code == 0, f"{step} {project.name}: {result.output}"
    out = tmp_path / "experiment"
    result = invoke(
        "experiment", precise, "--guides", "none,saliency,patch,gt", "--patch-from", f"fixed={fixed}",
        "--seeds", 1, "--epochs", 1, "--image-size", 32, "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(results["table"]) == ["none", "saliency", "patch", "gt", "patch-fixed"]
    assert len(results["runs"]) == 5
    for run in results["runs"]:
        assert 0.0 <= run["test"]["worst_group"] <= 1.0 and run["config"]["image_size"] == 32
    page = (out / "index.html").read_text(encoding="utf-8")
    assert all(f"<th>{guide}</th>" in page for guide in results["table"])
    assert (out / "worst_group.png").stat().st_size > 0 and (out / "cams.png").stat().st_size > 0


def test_patch_from_a_project_without_masks_says_so_and_starts_no_run(invoke, tmp_path: Path, benchmark_files):
    images, labels, masks = benchmark_files(16, 32)
    for name in ("a", "b"):
        result = invoke(
            "init", tmp_path / name, "--images", images, "--labels", labels, "--masks", masks, "--target", "x"
        )
        assert result.exit_code == 0, result.output
    out = tmp_path / "experiment"
    result = invoke(
        "experiment", tmp_path / "a", "--guides", "none,gt", "--patch-from", f"other={tmp_path / 'b'}",
        "--seeds", 1, "--epochs", 1, "--image-size", 32, "--device", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 1 and "no patch masks yet" in result.output
    assert not out.exists()
    result = invoke("experiment", tmp_path / "a", "--guides", "none", "--patch-from", "nolabel", "--out", out)
    assert result.exit_code == 1 and "LABEL=PROJECT_DIR" in result.output
