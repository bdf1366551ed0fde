"""Step 1: saliency backends and the clusters proposed to workers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from crowdpatch.boxes import Box
from crowdpatch.config import SaliencyConfig
from crowdpatch.saliency import (
    SaliencyBackend,
    available_backends,
    clusters_from_config,
    create_backend,
    extract_clusters,
    register_backend,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HORSES = SHARED_DATA / "weizmann_horse"
OPENCV_BACKENDS = ["spectral", "finegrained"]


def disc_image(height: int = 240, width: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on a grey, noisy background, and the disc's mask."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(110, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height * 0.45) ** 2 + (xx - width * 0.6) ** 2 <= (min(height, width) * 0.18) ** 2
    image[disc] = (250, 235, 200)
    return image, disc


def blob_map(height: int, width: int, blobs: list[tuple[int, int, int, float]]) -> np.ndarray:
    """A saliency map of flat discs ``(cy, cx, radius, value)`` on zero."""
    saliency = np.zeros((height, width), np.float32)
    yy, xx = np.mgrid[:height, :width]
    for cy, cx, radius, value in blobs:
        saliency[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = value
    return saliency


# Backends


@pytest.mark.parametrize("name", OPENCV_BACKENDS)
def test_opencv_backend_rates_a_bright_disc_above_its_noisy_background(name: str) -> None:
    image, disc = disc_image()
    (saliency,) = create_backend(name).predict([image])
    assert saliency[disc].mean() > saliency[~disc].mean() + 0.1


@pytest.mark.parametrize("name", OPENCV_BACKENDS)
def test_opencv_backend_returns_one_float_map_in_unit_range_per_image_at_its_size(name: str) -> None:
    images = [disc_image(90, 200)[0], disc_image(300, 70, seed=1)[0]]
    maps = create_backend(name, scales=(64, 128)).predict(images)
    assert len(maps) == 2
    for image, saliency in zip(images, maps):
        assert saliency.shape == image.shape[:2]
        assert saliency.dtype == np.float32
        assert np.isfinite(saliency).all()
        assert saliency.min() >= 0.0 and saliency.max() <= 1.0
        assert saliency.max() == pytest.approx(1.0)


@pytest.mark.parametrize("name", OPENCV_BACKENDS)
def test_constant_image_has_no_saliency_and_no_nan(name: str) -> None:
    (saliency,) = create_backend(name).predict([np.full((50, 80, 3), 128, np.uint8)])
    assert saliency.shape == (50, 80)
    assert not np.isnan(saliency).any()
    assert (saliency == 0).all()


@pytest.mark.parametrize("name", OPENCV_BACKENDS)
def test_opencv_backend_rejects_an_image_that_is_not_rgb_uint8(name: str) -> None:
    backend = create_backend(name)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        backend.predict([np.zeros((20, 20), np.uint8)])
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        backend.predict([np.zeros((20, 20, 3), np.float32)])


def test_built_in_backends_are_registered_by_name() -> None:
    assert {"spectral", "finegrained", "gt"} <= set(available_backends())
    assert create_backend("spectral", scales=[128]).scales == (128,)


def test_unknown_backend_name_error_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown saliency backend 'u2net'") as error:
        create_backend("u2net")
    for name in ("spectral", "finegrained", "gt"):
        assert name in str(error.value)


def test_a_second_backend_cannot_take_a_registered_name() -> None:
    class Impostor(SaliencyBackend):
        name = "spectral"

        def predict(self, images, gt_masks=None):  # type: ignore[no-untyped-def]
            return []

    with pytest.raises(ValueError, match="already registered"):
        register_backend("spectral")(Impostor)
    assert type(create_backend("spectral")).__name__ == "SpectralResidualBackend"


def test_gt_backend_returns_object_pixels_as_one_and_background_and_ignore_as_zero() -> None:
    mask = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    (saliency,) = create_backend("gt").predict([np.zeros((2, 3, 3), np.uint8)], [mask])
    assert saliency.dtype == np.float32
    np.testing.assert_array_equal(saliency, [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])


def test_gt_backend_refuses_to_guess_without_a_mask() -> None:
    backend = create_backend("gt")
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="needs gt_masks"):
        backend.predict([image])
    with pytest.raises(ValueError, match="no ground-truth mask for image 1"):
        backend.predict([image, image], [np.zeros((4, 4), np.uint8), None])
    with pytest.raises(ValueError, match="shape"):
        backend.predict([image], [np.zeros((5, 4), np.uint8)])


# Clusters


def test_two_separated_blobs_become_two_clusters_heaviest_first() -> None:
    saliency = blob_map(100, 200, [(50, 40, 15, 0.8), (50, 150, 25, 1.0)])
    clusters = extract_clusters(saliency, padding=0.0)
    assert len(clusters) == 2
    big, small = clusters
    assert big.component_box == Box(125, 25, 176, 76)
    assert small.component_box == Box(25, 35, 56, 66)
    assert big.mass > small.mass
    assert big.area == int((saliency == 1.0).sum())
    assert big.mass == pytest.approx(float(saliency[saliency == 1.0].sum()), rel=1e-5)


def test_components_under_the_minimum_area_are_dropped() -> None:
    # The speck is the brightest thing in the map, yet 5 x 5 px is 0.125% of the image.
    saliency = blob_map(100, 200, [(50, 60, 20, 0.7)])
    saliency[10:15, 180:185] = 1.0
    clusters = extract_clusters(saliency, min_area=0.01)
    assert [c.component_box for c in clusters] == [Box(40, 30, 81, 71)]
    assert len(extract_clusters(saliency, min_area=0.0)) == 2


def test_top_k_keeps_the_clusters_with_most_saliency_mass_in_order() -> None:
    # Mass, not brightness, ranks: the dim wide blob outweighs the bright small one.
    blobs = [(30, 30, 10, 1.0), (30, 100, 25, 0.5), (90, 40, 15, 0.9), (90, 140, 18, 0.8)]
    saliency = blob_map(130, 200, blobs)
    all_clusters = extract_clusters(saliency, threshold=0.1, min_area=0.0, top_k=10)
    masses = [c.mass for c in all_clusters]
    assert masses == sorted(masses, reverse=True) and len(masses) == 4
    top = extract_clusters(saliency, threshold=0.1, min_area=0.0, top_k=2)
    assert top == all_clusters[:2]
    assert top[0].component_box.contains(Box(100, 30, 101, 31))


def test_cluster_box_is_the_component_box_padded_and_clipped_to_the_image() -> None:
    saliency = blob_map(100, 100, [(10, 50, 8, 1.0)])
    (cluster,) = extract_clusters(saliency, padding=0.5)
    assert cluster.component_box == Box(42, 2, 59, 19)
    assert cluster.box == Box(34, 0, 67, 27)


def test_cluster_outline_is_a_polygon_around_the_component() -> None:
    saliency = blob_map(120, 160, [(60, 80, 30, 1.0)])
    (cluster,) = extract_clusters(saliency)
    polygon = np.array(cluster.outline, np.int32)
    assert len(polygon) >= 4
    drawn = np.zeros_like(saliency, np.uint8)
    cv2.fillPoly(drawn, [polygon], 1)
    component = saliency > 0
    iou = (drawn.astype(bool) & component).sum() / (drawn.astype(bool) | component).sum()
    assert iou > 0.9


def test_all_zero_map_has_no_clusters() -> None:
    assert extract_clusters(np.zeros((40, 60), np.float32)) == []
    assert extract_clusters(np.zeros((40, 60), np.float32), threshold=0.0) == []


def test_adaptive_threshold_keeps_a_single_sharp_peak() -> None:
    # Here 2 x mean exceeds the plateau's own value; the cap at 0.95 x max keeps the peak.
    saliency = np.zeros((10, 10), np.float32)
    saliency[:, :6] = 1.0
    (cluster,) = extract_clusters(saliency)
    assert cluster.component_box == Box(0, 0, 6, 10)


def test_invalid_threshold_is_rejected() -> None:
    saliency = blob_map(20, 20, [(10, 10, 4, 1.0)])
    with pytest.raises(ValueError, match="'adaptive' or a number"):
        extract_clusters(saliency, threshold="otsu")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        extract_clusters(saliency, threshold=1.5)


def test_clusters_from_config_applies_the_project_settings() -> None:
    saliency = blob_map(100, 200, [(50, 40, 15, 0.3), (50, 150, 25, 1.0)])
    assert len(clusters_from_config(saliency, SaliencyConfig())) == 2
    (bright,) = clusters_from_config(saliency, SaliencyConfig(threshold="0.5", padding=0.0))
    assert bright.box == bright.component_box == Box(125, 25, 176, 76)
    assert len(clusters_from_config(saliency, SaliencyConfig(top_k=1))) == 1
    with pytest.raises(ValueError, match="saliency.threshold"):
        clusters_from_config(saliency, SaliencyConfig(threshold="high"))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    padding=st.floats(0.0, 2.0),
    threshold=st.one_of(st.just("adaptive"), st.floats(0.0, 1.0)),
    top_k=st.integers(1, 5),
)
def test_every_cluster_box_lies_in_the_image_and_contains_its_component(
    seed: int, height: int, width: int, padding: float, threshold: str | float, top_k: int
) -> None:
    rng = np.random.default_rng(seed)
    saliency = cv2.GaussianBlur(rng.random((height, width), np.float32), (0, 0), 2.0)
    clusters = extract_clusters(saliency, threshold=threshold, min_area=0.0, top_k=top_k, padding=padding)
    image = Box.whole(width, height)
    assert len(clusters) <= top_k
    assert [c.mass for c in clusters] == sorted((c.mass for c in clusters), reverse=True)
    for cluster in clusters:
        assert image.contains(cluster.box)
        assert cluster.box.contains(cluster.component_box)
        assert 0 < cluster.area <= cluster.component_box.area
        for x, y in cluster.outline:
            assert cluster.component_box.contains(Box(x, y, x + 1, y + 1))


# Real data


def load_horse(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A Weizmann horse photo and its mask at the photo's size (masks are stored smaller)."""
    image = np.asarray(Image.open(HORSES / "rgb" / name).convert("RGB"))
    mask = np.asarray(Image.open(HORSES / "figure_ground" / name).convert("L"))
    mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return image, mask > 127


@pytest.mark.skipif(not (HORSES / "rgb").is_dir(), reason=f"Weizmann horses not found at {HORSES}")
def test_spectral_backend_rates_real_horses_above_their_background() -> None:
    names = sorted(p.name for p in (HORSES / "rgb").glob("*.jpg"))[:5]
    horses = [load_horse(name) for name in names]
    maps = create_backend("spectral").predict([image for image, _ in horses])
    inside = np.mean([saliency[mask].mean() for saliency, (_, mask) in zip(maps, horses)])
    outside = np.mean([saliency[~mask].mean() for saliency, (_, mask) in zip(maps, horses)])
    assert inside > outside
