"""Snap a blocky crowd mask to the object's edges with OpenCV's GrabCut, at no human cost.

Crowd answers decide cells or windows; the object's boundary lies somewhere inside the boundary
cells. GrabCut (Rother et al. 2004) fits colour models to the pixels the crowd is sure of and
re-labels only a band of one cell around the crowd's boundary: deep inside stays object, far
outside stays background, so the crowd's decisions are never overturned wholesale.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_SIDE = 512
"""GrabCut runs at most at this longest side (its cost grows with pixels); the result is scaled back."""

ITERATIONS = 5


def trimap(binary: np.ndarray, band: int) -> np.ndarray:
    """GrabCut labels for a binary mask.

    Sure object deeper than ``band`` inside, sure background farther than ``band`` outside, probable in between.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    inside = cv2.erode(binary.astype(np.uint8), kernel) > 0
    near = cv2.dilate(binary.astype(np.uint8), kernel) > 0
    labels = np.full(binary.shape, cv2.GC_BGD, np.uint8)
    labels[near] = cv2.GC_PR_BGD
    labels[binary] = cv2.GC_PR_FGD
    labels[inside] = cv2.GC_FGD
    return labels


def grabcut_refine(rgb: np.ndarray, binary: np.ndarray, band: int) -> np.ndarray:
    """The binary mask refined by GrabCut inside a ``band``-pixel band around its boundary.

    Returned unchanged when there is nothing to refine.
    """
    if not binary.any() or binary.all() or band < 1:
        return binary
    height, width = binary.shape
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small_rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        small = cv2.resize(binary.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        band = max(1, round(band * scale))
    else:
        small_rgb, small = rgb, binary
    labels = trimap(small, band)
    if (
        not ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).any()
        or not ((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)).any()
    ):
        return binary
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
    try:
        cv2.grabCut(
            cv2.cvtColor(np.ascontiguousarray(small_rgb), cv2.COLOR_RGB2BGR),
            labels,
            None,
            background,
            foreground,
            ITERATIONS,
            cv2.GC_INIT_WITH_MASK,
        )
    except cv2.error:
        # Degenerate colour statistics (e.g. a flat image): keep the crowd's mask.
        return binary
    refined = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if scale < 1.0:
        refined = cv2.resize(refined.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return refined


def refined_soft(soft: np.ndarray, refined: np.ndarray, threshold: float) -> np.ndarray:
    """A soft mask that agrees with the refined binary mask at ``threshold``.

    Elsewhere it keeps the crowd's confidence.
    """
    below = np.nextafter(np.float32(threshold), np.float32(0))
    return np.where(refined, np.maximum(soft, threshold), np.minimum(soft, below)).astype(np.float32)
