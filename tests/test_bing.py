"""BING objectness boxes as the step-1 region proposer (OpenCV contrib model files in shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crowdpatch.boxes import Box
from crowdpatch.datasets import load_rgb
from crowdpatch.saliency.bing import BingProposer, box_iou


@pytest.fixture
def bing_dir(shared_data: Path) -> Path:
    folder = shared_data / "weights" / "opencv_bing"
    if not folder.is_dir():
        pytest.skip(f"BING model files not found at {folder}")
    return folder


def test_bing_proposes_at_most_top_k_distinct_boxes_inside_the_image(bing_dir: Path, shared_data: Path) -> None:
    image = load_rgb(shared_data / "weizmann_horse" / "rgb" / "horse001.jpg")
    height, width = image.shape[:2]
    proposals = BingProposer(bing_dir, top_k=3, nms_iou=0.5).propose(image)
    assert 1 <= len(proposals) <= 3
    whole = Box.whole(width, height)
    for cluster in proposals:
        assert whole.contains(cluster.box)
        assert 0.01 <= cluster.box.area / whole.area <= 0.9
        assert len(cluster.outline) == 4
    for i, a in enumerate(proposals):
        for b in proposals[i + 1 :]:
            assert box_iou(a.box, b.box) < 0.5, "non-maximum suppression keeps distinct boxes"
    assert [c.mass for c in proposals] == sorted((c.mass for c in proposals), reverse=True)


def test_a_folder_without_the_bing_model_is_refused_naming_the_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ObjNessB2W8MAXBGR"):
        BingProposer(tmp_path)


def test_box_iou() -> None:
    assert box_iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert box_iou(Box(0, 0, 10, 10), Box(10, 10, 20, 20)) == 0.0
    assert box_iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_bench_masks_with_bing_regions(run_cli, bing_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    images, masks = shared_data / "coco_mval_subset" / "img", shared_data / "coco_mval_subset" / "gt"
    result = run_cli(
        "bench-masks",
        "--images",
        images,
        "--masks",
        masks,
        "--out",
        tmp_path / "b",
        "--limit",
        4,
        "--workers",
        5,
        "--proposer",
        "bing",
        "--proposer-model",
        bing_dir,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "b" / "summary.json").read_text(encoding="utf-8"))
    assert summary["images"] == 4 and 0.0 <= summary["mask_iou"]["patch"] <= 1.0
    assert np.isfinite(summary["modeled_seconds_per_image"]["patch"])
