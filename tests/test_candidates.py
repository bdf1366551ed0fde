"""Candidate masks from extreme points, their corrections, and the simulated workers who answer about them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crowdpatch.config import ProjectConfig, SimulationConfig
from crowdpatch.masks.candidate_store import CandidateStore
from crowdpatch.masks.candidates import (
    GRABCUT,
    extreme_points_of,
    grabcut_corrected,
    grabcut_from_edges,
    grabcut_from_points,
    points_box,
    saliency_on_crop,
)
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.simulate.workers import (
    PICK_BAR,
    SimulatedWorker,
    answer_correction,
    answer_extreme,
    answer_pick,
)

HONEST = SimulatedWorker("h", "honest", threshold=0.2, error_rate=0.0, speed=1.0)


def scene(size: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, np.ndarray]:
    """A textured green 'field' with a brown ellipse (the object) and a brown-free blue patch: photo, object mask."""
    height, width = size
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal((70, 140, 60), 12, (height, width, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    obj = ((xx - 90) / 40) ** 2 + ((yy - 60) / 25) ** 2 <= 1
    rgb[obj] = np.clip(rng.normal((130, 80, 40), 12, (int(obj.sum()), 3)), 0, 255).astype(np.uint8)
    rgb[10:30, 10:40] = (40, 60, 200)
    return rgb, obj


def test_extreme_points_of_are_the_objects_ends() -> None:
    _, obj = scene()
    top, bottom, left, right = extreme_points_of(obj)
    ys, xs = np.nonzero(obj)
    assert top[1] == ys.min() and bottom[1] == ys.max() and left[0] == xs.min() and right[0] == xs.max()
    assert extreme_points_of(np.zeros((5, 5), bool)) is None


def test_grabcut_from_extreme_points_finds_the_object_and_is_deterministic() -> None:
    rgb, obj = scene()
    points = extreme_points_of(obj)
    mask = grabcut_from_points(rgb, points)
    assert mask.shape == obj.shape and mask_iou(mask, obj.astype(np.uint8)) > 0.9
    assert np.array_equal(mask, grabcut_from_points(rgb, points))
    box = points_box(points, 160, 120)
    assert not mask[:, : box.x0].any() and not mask[: box.y0].any()  # nothing outside the points' box


def test_grabcut_along_edges_finds_a_thin_object_whose_box_holds_other_colours() -> None:
    """A bar across its box, whose empty corners hold colours seen nowhere around the box: started from the box,
    GrabCut takes them for object; started from the outline the edges draw through the points, it does not."""
    height, width = 120, 160
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal((70, 140, 60), 12, (height, width, 3)), 0, 255).astype(np.uint8)
    rgb[60:100, 30:70] = (40, 60, 200)
    rgb[20:55, 95:135] = (200, 200, 60)
    bar = np.zeros((height, width), np.uint8)
    cv2.line(bar, (30, 20), (130, 100), 1, 12)
    obj = bar.astype(bool)
    rgb[obj] = np.clip(rng.normal((130, 80, 40), 12, (int(obj.sum()), 3)), 0, 255).astype(np.uint8)
    points = extreme_points_of(obj)
    assert mask_iou(grabcut_from_points(rgb, points), bar) < 0.5
    along_edges = grabcut_from_edges(rgb, points)
    assert mask_iou(along_edges, bar) > 0.9
    assert np.array_equal(along_edges, grabcut_from_edges(rgb, points))


def test_points_box_stays_inside_the_image() -> None:
    box = points_box([[-5, 3], [200, 3], [50, -1], [50, 500]], 160, 120)
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, 160, 120)


def test_saliency_on_crop_sees_only_the_crop_and_keeps_to_the_box() -> None:
    rgb, obj = scene()
    points = extreme_points_of(obj)
    seen = []

    def predict(crop: np.ndarray) -> np.ndarray:
        seen.append(crop.shape)
        return np.ones(crop.shape[:2], np.float32)  # "all salient": the result is the box itself

    mask = saliency_on_crop(rgb, points, predict)
    box = points_box(points, 160, 120)
    assert seen and seen[0][0] < 120 and seen[0][1] < 160
    assert mask.sum() == box.area and mask[box.y0 : box.y1, box.x0 : box.x1].all()


def test_a_click_marks_object_outside_the_mask_and_background_inside_it() -> None:
    rgb, obj = scene()
    points = extreme_points_of(obj)
    base = np.zeros_like(obj)
    base[40:80, 60:100] = True  # a square in the middle of the ellipse
    corrected = grabcut_corrected(rgb, points, base, [(125.0, 60.0, True), (80.0, 60.0, False)])
    assert corrected[60, 125] and not corrected[60, 80]


def test_the_store_computes_once_and_reads_back_the_same_masks(tmp_path) -> None:
    from PIL import Image

    rgb, obj = scene()
    photo = tmp_path / "photo.png"
    Image.fromarray(rgb).save(photo)
    store = CandidateStore(tmp_path, ProjectConfig(name="p", target="t"))
    spec = {"points": extreme_points_of(obj), "candidates": [GRABCUT]}
    (first,) = store.masks(7, str(photo), spec)
    assert store.path(7, GRABCUT).exists()
    photo.unlink()  # a cached mask needs no photo
    (again,) = CandidateStore(tmp_path, ProjectConfig(name="p", target="t")).masks(7, str(photo), spec)
    assert np.array_equal(first, again)
    assert not list(tmp_path.glob("candidates/*.tmp.png"))


def test_simulated_extreme_points_land_near_the_ends_and_say_not_here_without_object() -> None:
    _, obj = scene()
    rng = np.random.default_rng(1)
    points = answer_extreme(HONEST, obj, rng)["points"]
    for clicked, true in zip(points, extreme_points_of(obj)):
        assert np.hypot(clicked[0] - true[0], clicked[1] - true[1]) < 8
    assert answer_extreme(HONEST, np.zeros_like(obj), rng) == {"not_here": True}
    spammer = SimulatedWorker("s", "always_no", 0.2, 0.0, 0.4)
    assert answer_extreme(spammer, obj, rng) == {"not_here": True}


@pytest.mark.parametrize(("ious", "expected"), [([0.3, 0.8], 1), ([0.9, 0.6], 0), ([0.2, PICK_BAR - 0.01], None)])
def test_a_simulated_pick_takes_the_best_outline_on_the_target(ious, expected) -> None:
    assert answer_pick(HONEST, ious, np.random.default_rng(0)) == {"choice": expected}


def test_simulated_corrections_click_inside_the_largest_errors_and_fits_when_none_is_left() -> None:
    _, obj = scene()
    valid = np.ones_like(obj)
    shown = obj.copy()
    shown[50:70, 115:131] = False  # the right end left out
    (click,) = answer_correction(HONEST, shown, obj, valid, np.random.default_rng(0))["clicks"]
    x, y = int(click[0]), int(click[1])
    assert obj[y, x] and not shown[y, x]
    assert answer_correction(HONEST, obj, obj, valid, np.random.default_rng(0)) == {"clicks": []}


def test_spammers_answer_every_new_kind_without_looking() -> None:
    _, obj = scene()
    rng = np.random.default_rng(0)
    crew = [SimulatedWorker("r", kind, 0.2, 0.0, 0.4) for kind in SimulationConfig().spammer_kinds]
    for worker in crew:
        assert set(answer_extreme(worker, obj, rng)) <= {"points", "not_here"}
        assert set(answer_pick(worker, [0.9], rng)) == {"choice"}
        assert all(len(p) == 2 for p in answer_correction(worker, obj, obj, np.ones_like(obj), rng)["clicks"])
