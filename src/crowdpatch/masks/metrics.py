"""Mask quality against ground truth: the number every mask source (crowd, saliency, polygon) is judged by."""

from __future__ import annotations

import numpy as np

IGNORE = 255
"""Ground-truth value of pixels nobody is sure of (object borders); they count for no one."""


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of a predicted bool mask with a uint8 ground-truth mask.

    Ground truth: 0 background, 255 ignore, any other value object. Ignore pixels are left out of
    both the intersection and the union, so a prediction is neither rewarded nor punished where
    the truth is unknown. Two empty masks agree perfectly: 1.0.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction has shape {pred.shape}, ground truth {gt.shape}")
    known = gt != IGNORE
    predicted = pred.astype(bool) & known
    actual = (gt != 0) & known
    union = int(np.count_nonzero(predicted | actual))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(predicted & actual)) / union


def has_object(gt: np.ndarray) -> bool:
    """Whether a ground truth marks any object pixel. One without is no reference: an empty crowd
    mask would "agree" with it at IoU 1.0, so callers score such an image apart."""
    return bool(np.any((gt != 0) & (gt != IGNORE)))
