"""The oracle backend: ground-truth masks served as saliency maps.

Experiments use it to measure what the crowd stages add when step 1 is perfect, separating
saliency errors from crowd errors. It is never a default: it needs the answer to the question.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crowdpatch.saliency.base import SaliencyBackend, check_rgb_image, register_backend


@register_backend("gt")
class GroundTruthBackend(SaliencyBackend):
    """Object pixels (mask value 1) are 1.0; background (0) and ignore (255) pixels are 0.0.

    Ignore pixels (unlabeled object borders) count as not salient: the oracle claims only what
    the ground truth is sure of.
    """

    def predict(
        self,
        images: Sequence[np.ndarray],
        gt_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """The masks as float32 maps; raises ``ValueError`` when an image has no mask of its size."""
        if gt_masks is None:
            raise ValueError("the 'gt' saliency backend needs gt_masks (one uint8 mask per image)")
        if len(gt_masks) != len(images):
            raise ValueError(f"the 'gt' saliency backend got {len(images)} images but {len(gt_masks)} masks")
        maps = []
        for index, (image, mask) in enumerate(zip(images, gt_masks)):
            check_rgb_image(image)
            if mask is None:
                raise ValueError(f"the 'gt' saliency backend has no ground-truth mask for image {index}")
            if mask.shape != image.shape[:2]:
                raise ValueError(f"mask {index} has shape {mask.shape}, its image is {image.shape[:2]}")
            maps.append((np.asarray(mask) == 1).astype(np.float32))
        return maps
