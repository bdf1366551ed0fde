"""Saliency map -> a few candidate regions (clusters) that a worker verifies with one yes/no.

Step 1 asks one question per cluster, so the number of clusters is a cost: threshold the map,
split it into 8-connected components, drop specks (< ``min_area`` of the image), and keep the
``top_k`` components that carry the most saliency. Each cluster's box is padded because workers
and the patch lattice of step 2 need some context around a tight, possibly clipped, proposal.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.config import SaliencyConfig

ADAPTIVE_FACTOR = 2.0
"""'adaptive' threshold = this x the map's mean (Achanta et al. 2009's frequency-tuned rule)."""

ADAPTIVE_CAP = 0.95
"""The adaptive threshold never exceeds this share of the map's maximum: on a map with one
sharp peak, 2x the mean could exceed the peak itself and leave nothing."""


@dataclass(frozen=True)
class Cluster:
    """One salient connected component, as a region proposal."""

    box: Box
    """The component's box padded by ``padding`` of its side, clipped to the image: what is shown."""
    component_box: Box
    """The tight box of the component's pixels."""
    mass: float
    """Sum of saliency over the component's pixels: how much of the map's evidence it holds."""
    area: int
    """Pixels in the component."""
    outline: list[list[int]]
    """Simplified outer contour ``[[x, y], ...]`` in image pixels, for drawing it to workers."""


def resolve_threshold(saliency: np.ndarray, threshold: str | float) -> float:
    """The numeric threshold ``threshold`` means for this map ('adaptive' or a number in [0, 1])."""
    if isinstance(threshold, str):
        if threshold != "adaptive":
            raise ValueError(f"threshold must be 'adaptive' or a number in [0, 1], got {threshold!r}")
        return min(ADAPTIVE_FACTOR * float(saliency.mean()), ADAPTIVE_CAP * float(saliency.max()))
    value = float(threshold)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {value}")
    return value


def extract_clusters(
    saliency: np.ndarray,
    *,
    threshold: str | float = "adaptive",
    min_area: float = 0.01,
    top_k: int = 3,
    padding: float = 0.15,
    outline_tolerance: float = 0.01,
) -> list[Cluster]:
    """The ``top_k`` components of ``saliency > threshold``, largest saliency mass first.

    ``min_area`` is a share of the image's area; ``padding`` a share of each box side;
    ``outline_tolerance`` the polygon simplification's tolerance as a share of the contour's
    perimeter (it only changes how the cluster is drawn). A map with nothing above the
    threshold (e.g. all zeros) gives no clusters.
    """
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"expected a non-empty H x W saliency map, got shape {saliency.shape}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if min_area < 0 or padding < 0 or outline_tolerance < 0:
        raise ValueError("min_area, padding and outline_tolerance must be >= 0")
    values = saliency.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise ValueError("saliency map contains NaN or infinite values")
    height, width = values.shape
    binary = (values > resolve_threshold(values, threshold)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8, ltype=cv2.CV_32S)
    # One pass over the image for every component's mass, instead of one mask per component.
    masses = np.bincount(labels.ravel(), weights=values.ravel(), minlength=count)
    smallest = min_area * height * width
    kept = [label for label in range(1, count) if stats[label, cv2.CC_STAT_AREA] >= smallest]
    kept.sort(key=lambda label: masses[label], reverse=True)
    return [
        _cluster(labels, label, stats[label], float(masses[label]), padding, outline_tolerance)
        for label in kept[:top_k]
    ]


def clusters_from_config(saliency: np.ndarray, cfg: SaliencyConfig) -> list[Cluster]:
    """``extract_clusters`` with a project's settings (``cfg.threshold`` is text in the TOML)."""
    threshold: str | float = cfg.threshold
    if cfg.threshold != "adaptive":
        try:
            threshold = float(cfg.threshold)
        except ValueError:
            raise ValueError(
                f"saliency.threshold must be 'adaptive' or a number in [0, 1], got {cfg.threshold!r}"
            ) from None
    return extract_clusters(saliency, threshold=threshold, min_area=cfg.min_area, top_k=cfg.top_k, padding=cfg.padding)


def _cluster(
    labels: np.ndarray, label: int, stat: np.ndarray, mass: float, padding: float, tolerance: float
) -> Cluster:
    height, width = labels.shape
    x, y = int(stat[cv2.CC_STAT_LEFT]), int(stat[cv2.CC_STAT_TOP])
    component_box = Box(x, y, x + int(stat[cv2.CC_STAT_WIDTH]), y + int(stat[cv2.CC_STAT_HEIGHT]))
    component = labels[component_box.y0 : component_box.y1, component_box.x0 : component_box.x1] == label
    contours, _ = cv2.findContours(
        component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y)
    )
    # An 8-connected component has one outer contour; max() only guards OpenCV's corner cases.
    contour = max(contours, key=cv2.contourArea)
    polygon = cv2.approxPolyDP(contour, tolerance * cv2.arcLength(contour, closed=True), closed=True)
    return Cluster(
        box=component_box.pad(padding, width, height),
        component_box=component_box,
        mass=mass,
        area=int(stat[cv2.CC_STAT_AREA]),
        outline=polygon.reshape(-1, 2).tolist(),
    )
