"""The saliency map as a prior: a region's thresholded saliency ("the outline") and its share per grid cell.

One definition serves the adaptive planner (is the outline worth asking about? what does the map say
about a cell?), the mask builder (an accepted outline *is* the region's mask), the simulated workers
(how well does the outline cover the object?) and the worker page (draw the outline).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.saliency.clusters import resolve_threshold
from crowdpatch.saliency.stored import load_saliency


@lru_cache(maxsize=256)
def _saliency(path: str) -> np.ndarray:
    return load_saliency(path)


def salient_pixels(saliency_path: str, threshold: str | float) -> np.ndarray:
    """The image's saliency map thresholded as the clusters were (a saliency file never changes once written)."""
    saliency = _saliency(saliency_path)
    return saliency >= resolve_threshold(saliency, threshold)


def outline_mask(salient: np.ndarray, box: Box) -> np.ndarray:
    """The salient pixels inside ``box``, as a full-image boolean mask."""
    mask = np.zeros_like(salient, dtype=bool)
    cut = (slice(box.y0, box.y1), slice(box.x0, box.x1))
    mask[cut] = salient[cut]
    return mask


def cell_shares(salient: np.ndarray, cells: list[Box]) -> np.ndarray:
    """Share of each cell's pixels that the saliency map calls salient."""
    return np.array([float(salient[c.y0 : c.y1, c.x0 : c.x1].mean()) if c.area else 0.0 for c in cells])


def outline_polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """The contours of a mask, its holes' too, as ``[[x, y], ...]`` lists, for drawing it to a worker (a hole a
    correction cut out must show as one)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).tolist() for c in contours if len(c) >= 3]
