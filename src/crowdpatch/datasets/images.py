"""Reading user images safely (ground-truth masks: :mod:`crowdpatch.datasets.masks`).

Every image a project touches comes from a user's folder, so any file may be missing, empty,
truncated, not an image at all, or a decompression bomb. All of these become one exception,
:class:`ImageLoadError`, that names the file, so callers can report the file and keep going.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image accepted (width x height): a 40-megapixel photo decodes to 120 MB of RGB."""

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageLoadError(Exception):
    """An image or mask file that cannot be used, and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Rebuild from both fields, so the error survives pickling (e.g. out of DataLoader workers).
        return (type(self), (self.path, self.reason))


@contextmanager
def _open_checked(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """Open ``path`` and vet its header, without decoding any pixel data.

    The pixel count is checked from the header so that a bomb is refused before it is decoded.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(path, "file not found")
    if not path.is_file():
        raise ImageLoadError(path, "not a file")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        # Pillow warns (rather than raises) between its own two bomb limits; our limit decides instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "not an image (unrecognized format)") from exc
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read: {exc.strerror or exc}") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageLoadError(
                path,
                f"decompression bomb: {width} x {height} = {width * height} pixels exceeds the limit of {max_pixels}",
            )
        yield image


def _decode(path: Path, image: Image.Image) -> Image.Image:
    """Decode all pixel data now, so truncation surfaces here and not deep inside a later stage."""
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"decompression bomb: {exc}") from exc
    # Pillow's format plugins raise many exception types on malformed data (OSError, SyntaxError,
    # ValueError, struct.error, ...); all of them mean the same thing to the caller.
    except Exception as exc:
        raise ImageLoadError(path, f"corrupt or truncated image data: {exc}") from exc
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # A broken EXIF block does not make the pixels unusable: keep them as stored, as image_size does.
        return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> HxWx3 uint8 RGB.

    16-bit images are scaled (65535 -> 255), not clipped as Pillow's own conversion does.
    Transparent pixels are composited on white: what a viewer shows, whereas dropping alpha
    exposes whatever colour the file happens to store under transparency (often black).
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        # Mode "I" is how Pillow opens some 16-bit files; values beyond 16 bits are clipped.
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        grey = ((values + 128) // 257).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or image.has_transparency_data:
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
        alpha = rgba[:, :, 3:4]
        rgb = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> np.ndarray:
    """The image as HxWx3 uint8 RGB, upright (EXIF orientation applied), fully decoded.

    With ``max_side``, scaled down (Lanczos, aspect ratio kept) so that neither side is longer; a
    JPEG is then decoded at the smallest of its built-in reduced scales (1/2, 1/4, 1/8) that is
    still large enough, so a large photo never occupies its full size in memory.
    Raises :class:`ImageLoadError` for a missing, empty, non-image, truncated or corrupt file,
    and for one over ``max_pixels`` (checked from the header, before decoding).
    """
    path = Path(path)
    with _open_checked(path, max_pixels) as image:
        scale = max_side / max(image.size) if max_side is not None else 1.0
        if scale < 1:
            image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        rgb = _to_rgb(_decode(path, image))
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        rgb = np.asarray(ImageOps.contain(Image.fromarray(rgb), (max_side, max_side), Image.LANCZOS))
    return rgb


def image_size(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as displayed (after EXIF orientation), read from the header only.

    Cheap enough to vet a whole folder; a file truncated after its header still passes.
    """
    path = Path(path)
    with _open_checked(path, max_pixels) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
        except Exception:
            # A broken EXIF block does not make the pixels unusable; load_rgb then ignores it too.
            orientation = None
        if orientation in _TRANSPOSED_ORIENTATIONS:
            return height, width
        return width, height
