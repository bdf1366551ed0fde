"""Offline saliency from OpenCV's static saliency algorithms: the default that needs no files.

Both backends run at several scales and fuse the maps by their mean (256 and 512 px by
default): a coarse scale finds whole objects, a fine one keeps their boundaries. The fused map is
blurred lightly because spectral-residual maps are speckled (isolated high pixels on texture and
edges) and fine-grained maps are edge-heavy; the speckles would otherwise become tiny connected
components or holes when step 1 thresholds the map into clusters.

Measured on the 328 Weizmann horses (``bench/saliency_quality.py``; in/out = mean saliency
inside/outside the mask, IoU at 2x the map's mean): OpenCV's spectral residual called once on the
full image gives 0.179 / 0.126 / IoU 0.178; the defaults here give 0.192 / 0.127 / IoU 0.192.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import cv2
import numpy as np

from crowdpatch.saliency.base import SaliencyBackend, check_rgb_image, normalize_unit, register_backend


class OpenCVStaticBackend(SaliencyBackend):
    """Shared multi-scale pipeline; subclasses say which OpenCV algorithm computes one scale."""

    def __init__(self, scales: Sequence[int] = (256, 512), blur_sigma: float = 0.005) -> None:
        """``scales``: longest-side sizes (px) the map is computed at; ``blur_sigma``: the Gaussian
        blur's sigma as a share of the image's longest side (0 turns it off)."""
        self.scales = tuple(int(s) for s in scales)
        if not self.scales or min(self.scales) < 8:
            raise ValueError(f"scales must be a non-empty list of sizes >= 8 px, got {list(scales)}")
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        self.blur_sigma = float(blur_sigma)

    @abstractmethod
    def _saliency_at_scale(self, bgr: np.ndarray) -> np.ndarray:
        """The raw OpenCV map of an image already resized to one scale (any float range)."""

    def predict(
        self,
        images: Sequence[np.ndarray],
        gt_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """Maps in [0, 1] at each image's size; ``gt_masks`` is ignored (this backend does not cheat)."""
        return [self._predict_one(image) for image in images]

    def _predict_one(self, image: np.ndarray) -> np.ndarray:
        check_rgb_image(image)
        height, width = image.shape[:2]
        if int(image.max()) == int(image.min()):
            # A flat image has nothing salient; OpenCV would return rounding noise, not zeros.
            return np.zeros((height, width), np.float32)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        fused = np.zeros((height, width), np.float32)
        for scale in self.scales:
            ratio = scale / max(height, width)
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            # INTER_AREA averages when shrinking (no aliasing); it is undefined for enlarging.
            interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
            scaled = cv2.resize(bgr, size, interpolation=interpolation)
            saliency = normalize_unit(self._saliency_at_scale(scaled))
            fused += cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
        fused /= len(self.scales)
        if self.blur_sigma > 0:
            fused = cv2.GaussianBlur(fused, (0, 0), sigmaX=self.blur_sigma * max(height, width))
        return normalize_unit(fused)


@register_backend("spectral")
class SpectralResidualBackend(OpenCVStaticBackend):
    """Spectral residual saliency (Hou & Zhang, CVPR 2007): fast, coarse, blob-like maps.

    The residual is computed on a grid smaller than the scaled image (``working_fraction`` of it):
    the method finds objects only at a coarse resolution (Hou & Zhang use 64 px for a ~256 px
    image; at full resolution it returns edges and texture). OpenCV's own default grid is a fixed
    64 x 64 square, which would ignore the scale and distort the aspect ratio; a quarter of each
    scale (64 and 128 px for the default scales) measured best on the horses.
    """

    def __init__(
        self, scales: Sequence[int] = (256, 512), blur_sigma: float = 0.005, working_fraction: float = 0.25
    ) -> None:
        super().__init__(scales, blur_sigma)
        if not 0 < working_fraction <= 1:
            raise ValueError(f"working_fraction must be in (0, 1], got {working_fraction}")
        self.working_fraction = float(working_fraction)
        self._algorithm = cv2.saliency.StaticSaliencySpectralResidual_create()

    def _saliency_at_scale(self, bgr: np.ndarray) -> np.ndarray:
        height, width = bgr.shape[:2]
        self._algorithm.setImageWidth(max(1, round(width * self.working_fraction)))
        self._algorithm.setImageHeight(max(1, round(height * self.working_fraction)))
        ok, saliency = self._algorithm.computeSaliency(bgr)
        if not ok:
            raise RuntimeError(f"OpenCV spectral residual failed on an image of shape {bgr.shape}")
        return saliency


@register_backend("finegrained")
class FineGrainedBackend(OpenCVStaticBackend):
    """Fine-grained saliency (Montabone & Soto 2010, centre-surround on integral images):
    sharper object boundaries than spectral residual, ~7x slower."""

    def __init__(self, scales: Sequence[int] = (256, 512), blur_sigma: float = 0.005) -> None:
        super().__init__(scales, blur_sigma)
        self._algorithm = cv2.saliency.StaticSaliencyFineGrained_create()

    def _saliency_at_scale(self, bgr: np.ndarray) -> np.ndarray:
        ok, saliency = self._algorithm.computeSaliency(bgr)
        if not ok:
            raise RuntimeError(f"OpenCV fine-grained saliency failed on an image of shape {bgr.shape}")
        return saliency
