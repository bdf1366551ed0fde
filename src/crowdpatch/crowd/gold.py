"""Gold (known-answer) questions, drawn from ground-truth masks where a project has them.

Only clear cases become gold: a window mostly object is a "yes", one with no object a "no".
Ambiguous windows would punish honest workers for reasonable disagreement. A ground truth with
no object makes no gold at all: it is more often a mask read or drawn wrong than a photo without
the target, and "no" gold from it would ban the workers who see the target.
"""

from __future__ import annotations

import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.datasets.masks import MASK_OBJECT
from crowdpatch.masks.coverage import CoverageOracle
from crowdpatch.patches.lattice import WindowKey, positions, window_box

GOLD_YES_COVERAGE = 0.6
GOLD_NO_COVERAGE = 0.0
GOLD_PER_IMAGE = 2


def gold_windows(
    gt_mask: np.ndarray, rng: np.random.Generator, per_image: int = GOLD_PER_IMAGE
) -> list[tuple[Box, str]]:
    """Up to ``per_image`` clear windows over the whole image (about half yes, half no); none without an object."""
    if not np.any(gt_mask == MASK_OBJECT):
        return []
    height, width = gt_mask.shape
    oracle = CoverageOracle(gt_mask)
    whole = Box.whole(width, height)
    candidates: dict[str, list[Box]] = {"yes": [], "no": []}
    for level in (1, 2, 3):
        for ix in range(positions(level)):
            for iy in range(positions(level)):
                box = window_box(whole, WindowKey(level, ix, iy))
                if box.width < 4 or box.height < 4 or oracle.labelled(box) < 0.5:
                    continue
                coverage = oracle.coverage(box)
                if coverage >= GOLD_YES_COVERAGE:
                    candidates["yes"].append(box)
                elif coverage <= GOLD_NO_COVERAGE:
                    candidates["no"].append(box)
    chosen: list[tuple[Box, str]] = []
    for i in range(per_image):
        wanted = ("yes", "no")[i % 2]
        answer = wanted if candidates[wanted] else ("no" if wanted == "yes" else "yes")
        pool = candidates[answer]
        if not pool:
            break
        chosen.append((pool.pop(int(rng.integers(len(pool)))), answer))
    return chosen
