"""How much of any box the ground-truth object covers: the oracle behind gold questions and simulated workers."""

from __future__ import annotations

import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.datasets.masks import MASK_IGNORE, MASK_OBJECT


class CoverageOracle:
    """Share of any box covered by the object, in O(1) per box (integral images).

    Pixels in the ignore band (255) count neither as object nor as background.
    """

    def __init__(self, gt_mask: np.ndarray):
        self.height, self.width = gt_mask.shape
        obj = (gt_mask == MASK_OBJECT).astype(np.int64)
        valid = (gt_mask != MASK_IGNORE).astype(np.int64)
        self._obj = np.pad(obj.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self._valid = np.pad(valid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        self.object_pixels = int(obj.sum())

    @staticmethod
    def _sum(table: np.ndarray, box: Box) -> int:
        return int(table[box.y1, box.x1] - table[box.y0, box.x1] - table[box.y1, box.x0] + table[box.y0, box.x0])

    def coverage(self, box: Box) -> float:
        """Object share of the box's labelled pixels."""
        valid = self._sum(self._valid, box)
        return self._sum(self._obj, box) / valid if valid else 0.0

    def labelled(self, box: Box) -> float:
        """Share of the box's pixels that are labelled (not in the ignore band)."""
        return self._sum(self._valid, box) / box.area

    def recall(self, box: Box) -> float:
        """Share of the whole object that lies inside the box."""
        return self._sum(self._obj, box) / self.object_pixels if self.object_pixels else 0.0
