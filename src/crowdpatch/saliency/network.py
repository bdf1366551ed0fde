"""Shared pre/post-processing for saliency networks (CSNet in PyTorch, any model through ONNX).

Networks take a fixed-size ``N x 3 x H x W`` float batch normalised with a mean/std (ImageNet's
by default) and return one map per image at that size; ``prepare_batch`` and ``maps_to_images``
do the resizing both ways, so every backend returns maps at each image's own size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from crowdpatch.saliency.base import check_rgb_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``(h, w)`` -> ``(h, w)``, each >= 8."""
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        values = [int(v) for v in size]
        if len(values) != 2:
            raise ValueError(f"input size must be one int or (height, width), got {list(size)}")
        height, width = values
    if min(height, width) < 8:
        raise ValueError(f"input size must be >= 8 px, got {(height, width)}")
    return height, width


def prepare_batch(
    images: Sequence[np.ndarray],
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """RGB uint8 images -> ``N x 3 x h x w`` float32: scaled to [0, 1], resized (bilinear), normalised."""
    height, width = size
    mean_arr = np.asarray(mean, np.float32).reshape(1, 1, 3)
    std_arr = np.asarray(std, np.float32).reshape(1, 1, 3)
    batch = np.empty((len(images), 3, height, width), np.float32)
    for index, image in enumerate(images):
        check_rgb_image(image)
        resized = cv2.resize(image.astype(np.float32) / 255.0, (width, height), interpolation=cv2.INTER_LINEAR)
        batch[index] = ((resized - mean_arr) / std_arr).transpose(2, 0, 1)
    return batch


def sigmoid(values: np.ndarray) -> np.ndarray:
    # exp of a large negative logit overflows harmlessly to inf -> 0; silence the warning.
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-values.astype(np.float32)))).astype(np.float32)


def maps_to_images(maps: np.ndarray, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``N x h x w`` maps in [0, 1] -> one float32 map per image at the image's size (bilinear)."""
    out = []
    for saliency, image in zip(maps, images):
        height, width = image.shape[:2]
        resized = cv2.resize(
            np.ascontiguousarray(saliency, np.float32), (width, height), interpolation=cv2.INTER_LINEAR
        )
        out.append(np.clip(resized, 0.0, 1.0).astype(np.float32))
    return out


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
