"""Mask files (PNG, NPY, COCO JSON with RLE) and mask quality against ground truth."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image
from pycocotools.coco import COCO

from crowdpatch.masks import (
    CocoImage,
    decode_rle,
    encode_rle,
    mask_iou,
    write_binary_png,
    write_coco_json,
    write_npy,
    write_soft_png,
)

bool_masks = arrays(np.bool_, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40))


@settings(max_examples=100, deadline=None)
@given(binary=bool_masks)
def test_rle_round_trip_gives_back_the_mask(binary: np.ndarray) -> None:
    rle = encode_rle(binary)
    assert json.loads(json.dumps(rle)) == rle
    assert rle["size"] == list(binary.shape)
    decoded = decode_rle(rle)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, binary)


def test_rle_encoding_refuses_a_mask_that_is_not_bool() -> None:
    with pytest.raises(ValueError, match="bool mask"):
        encode_rle(np.array([[0, 255]], np.uint8))


def test_soft_png_round_trips_within_one_grey_level(tmp_path: Path) -> None:
    soft = np.random.default_rng(0).random((37, 53))
    soft[0, :3] = [0.0, 1.0 + 1e-9, 0.5]
    write_soft_png(tmp_path / "soft.png", soft)
    with Image.open(tmp_path / "soft.png") as png:
        assert png.mode == "L"
        restored = np.asarray(png).astype(np.float64) / 255
    assert restored.shape == soft.shape
    assert np.abs(restored - soft).max() <= 0.5 / 255 + 1e-9
    assert restored[0, 0] == 0.0 and restored[0, 1] == 1.0


def test_soft_png_refuses_values_outside_the_unit_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_soft_png(tmp_path / "bad.png", np.array([[0.2, 1.2]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_soft_png(tmp_path / "bad.png", np.array([[0.2, np.nan]]))
    assert list(tmp_path.iterdir()) == []


def test_binary_png_stores_object_as_255_and_background_as_0(tmp_path: Path) -> None:
    binary = np.array([[True, False, False], [False, True, True]])
    write_binary_png(tmp_path / "mask.png", binary)
    with Image.open(tmp_path / "mask.png") as png:
        np.testing.assert_array_equal(np.asarray(png), np.where(binary, 255, 0))


def test_npy_keeps_the_soft_mask_as_float32(tmp_path: Path) -> None:
    soft = np.random.default_rng(1).random((8, 9))
    write_npy(tmp_path / "soft.npy", soft)
    restored = np.load(tmp_path / "soft.npy")
    assert restored.dtype == np.float32
    np.testing.assert_array_equal(restored, soft.astype(np.float32))


def test_a_write_that_fails_midway_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mask.png"
    write_binary_png(path, np.ones((4, 4), bool))
    before = path.read_bytes()

    def full_disk(self: Image.Image, stream, format: str) -> None:  # type: ignore[no-untyped-def]
        stream.write(b"\x89PNG half a mask")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_binary_png(path, np.zeros((4, 4), bool))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_written_masks_are_readable_by_others(tmp_path: Path) -> None:
    write_binary_png(tmp_path / "mask.png", np.ones((2, 2), bool))
    assert os.stat(tmp_path / "mask.png").st_mode & 0o044 == 0o044


# annToMask meets pycocotools' NumPy 2 deprecation warning (decode_rle silences it for our own calls).
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_coco_json_loads_in_pycocotools_and_gives_back_each_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    first = np.zeros((30, 40), bool)
    first[5:20, 10:31] = True
    second = rng.random((25, 15)) > 0.6
    empty = np.zeros((10, 12), bool)
    images = [
        CocoImage(7, "horse007.jpg", 40, 30, first, score=0.9, category="horse"),
        CocoImage(8, "bird008.jpg", 15, 25, second, category="bird"),
        CocoImage(9, "horse009.jpg", 12, 10, empty, category="horse"),
    ]
    path = tmp_path / "masks.json"
    write_coco_json(path, images)

    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [7, 8, 9]
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == {"horse": 1, "bird": 2}
    for image in images:
        (annotation,) = coco.loadAnns(coco.getAnnIds(imgIds=[image.image_id]))
        np.testing.assert_array_equal(coco.annToMask(annotation).astype(bool), image.binary)
        assert annotation["area"] == image.binary.sum()
        assert annotation["iscrowd"] == 0
        assert annotation["score"] == image.score
        assert coco.loadImgs([image.image_id])[0]["file_name"] == image.file_name
    (box_annotation,) = coco.loadAnns(coco.getAnnIds(imgIds=[7]))
    assert box_annotation["bbox"] == [10.0, 5.0, 21.0, 15.0]


def test_coco_json_refuses_a_mask_that_does_not_fit_its_image(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not \\(height, width\\)"):
        write_coco_json(tmp_path / "masks.json", [CocoImage(1, "a.jpg", 20, 10, np.zeros((20, 10), bool))])


def test_mask_iou_leaves_ignore_pixels_out() -> None:
    gt = np.array([[1, 1, 0, 255], [0, 0, 0, 255]], np.uint8)
    pred = np.array([[True, False, False, True], [True, False, False, True]])
    # Intersection 1 pixel; union: the 2 object pixels + 1 false positive; the 255 column counts for no one.
    assert mask_iou(pred, gt) == pytest.approx(1 / 3)
    pred_ignoring = pred.copy()
    pred_ignoring[:, 3] = False
    assert mask_iou(pred_ignoring, gt) == mask_iou(pred, gt)


def test_mask_iou_of_two_empty_masks_is_perfect_agreement() -> None:
    gt = np.array([[0, 255], [0, 0]], np.uint8)
    assert mask_iou(np.array([[False, True], [False, False]]), gt) == 1.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), np.uint8)) == 1.0


def test_mask_iou_is_one_for_the_truth_and_zero_for_its_complement() -> None:
    gt = np.array([[1, 0], [0, 1]], np.uint8)
    assert mask_iou(gt == 1, gt) == 1.0
    assert mask_iou(gt == 0, gt) == 0.0
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((2, 3), bool), gt)
