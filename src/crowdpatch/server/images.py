"""What a worker sees of an image: the patch cropped, a thumbnail of where it sits, a verified cluster outlined.

Images are looked up by task id in the store, never by a path a client gives.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from crowdpatch.boxes import Box
from crowdpatch.datasets import load_rgb

THUMBNAIL_SIDE = 160
MIN_CROP_SIDE = 256
"""Small crops are upscaled on the server (nearest) so every browser shows crisp pixels."""

OUTLINE = (255, 214, 0)


@lru_cache(maxsize=64)
def _image(path: str) -> Image.Image:
    return Image.fromarray(load_rgb(Path(path)))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _upscale(image: Image.Image, min_side: int) -> Image.Image:
    side = min(image.size)
    if side >= min_side:
        return image
    factor = -(-min_side // side)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def crop(path: str, box: Box) -> bytes:
    """The patch (or grid region) alone."""
    return _png(_upscale(_image(path).crop((box.x0, box.y0, box.x1, box.y1)), MIN_CROP_SIDE))


def context(path: str, box: Box) -> bytes:
    """A thumbnail of the whole image with the patch's place outlined."""
    image = _image(path).copy()
    scale = THUMBNAIL_SIDE / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    else:
        scale = 1.0
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        [box.x0 * scale, box.y0 * scale, box.x1 * scale - 1, box.y1 * scale - 1], outline=OUTLINE, width=max(1, round(2 * scale))
    )
    return _png(_upscale(image, THUMBNAIL_SIDE // 2))


def outlined(path: str, box: Box, outlines: list[list[list[int]]]) -> bytes:
    """The whole image with a cluster (or a saliency mask) outlined: its contours when known, else its box."""
    image = _upscale(_image(path), MIN_CROP_SIDE).copy()
    scale = image.width / _image(path).width
    draw = ImageDraw.Draw(image)
    width = max(2, round(scale))
    drawable = [outline for outline in outlines if outline and len(outline) >= 3]
    if drawable:
        for outline in drawable:
            points = [(x * scale, y * scale) for x, y in outline]
            draw.line(points + [points[0]], fill=OUTLINE, width=width)
    else:
        draw.rectangle([box.x0 * scale, box.y0 * scale, box.x1 * scale - 1, box.y1 * scale - 1], outline=OUTLINE, width=width)
    return _png(image)


def whole(path: str) -> bytes:
    """The whole image, upscaled like crops (polygon tasks); clients map clicks back to image pixels."""
    return _png(_upscale(_image(path), MIN_CROP_SIDE))


def soft_mask_png(soft: np.ndarray) -> bytes:
    return _png(Image.fromarray((np.clip(soft, 0, 1) * 255).astype(np.uint8)))
