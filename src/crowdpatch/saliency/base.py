"""One interface for every saliency backend, and the registry that builds them by name.

Step 1 of the pipeline only needs "a float map in [0, 1] per image"; whether it comes from
OpenCV, an ONNX model or the ground truth is a configuration choice (``SaliencyConfig.backend``),
so backends register themselves under a name (:mod:`crowdpatch.registry`) and callers never import a
backend class directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from crowdpatch.config import SaliencyConfig
from crowdpatch.registry import Registry


class SaliencyBackend(ABC):
    """Predicts, for each RGB image, how likely each pixel is to belong to the salient object."""

    name: ClassVar[str]

    @abstractmethod
    def predict(
        self,
        images: Sequence[np.ndarray],
        gt_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """One float32 ``H x W`` map in [0, 1] per ``H x W x 3`` uint8 RGB image, at the image's size.

        ``gt_masks`` (uint8: 0 background, 1 object, 255 ignore) exists for the oracle backend,
        which experiments use to separate saliency errors from crowd errors; others ignore it.
        """


BACKENDS: Registry[type[SaliencyBackend]] = Registry("saliency backend")
register_backend = BACKENDS.register
"""Class decorator taking the backend's name: ``@register_backend("spectral")`` makes ``create_backend("spectral")``."""


def create_backend(name: str, **options: object) -> SaliencyBackend:
    """Build the backend registered as ``name`` with its constructor ``options``."""
    return BACKENDS.get(name)(**options)


def backend_from_config(config: SaliencyConfig) -> SaliencyBackend:
    """The backend a project's ``[saliency]`` section names, with its options."""
    options: dict = {}
    if config.backend in ("spectral", "finegrained"):
        options["scales"] = tuple(config.scales)
    if config.weights:
        options["weights"] = config.weights
    return create_backend(config.backend, **options)


def available_backends() -> list[str]:
    """Names accepted by ``create_backend``, sorted."""
    return sorted(BACKENDS.names())


def check_rgb_image(image: np.ndarray) -> None:
    """Reject anything but ``H x W x 3`` uint8 early, so a bad input fails here and not inside OpenCV."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got shape {shape} dtype {dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")


def normalize_unit(saliency: np.ndarray) -> np.ndarray:
    """Min-max scale a map to float32 [0, 1]; a flat map (no contrast, nothing salient) becomes zeros.

    The flat case needs its own branch: dividing by a zero (or rounding-noise) range would give
    NaN or amplify float noise into a fake map.
    """
    values = saliency.astype(np.float32, copy=False)
    low = float(np.min(values))
    span = float(np.max(values)) - low
    if not np.isfinite(span) or span <= 1e-6:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / span).astype(np.float32)
