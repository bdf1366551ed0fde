"""The photos the server draws task pictures from: scaled once to the largest size a task shows, kept on disk.

A 5000 x 4000 photo decodes to 60 MB and costs about a second of CPU; no task picture is wider
than ``SCALED_SIDE_PX`` (the widest the worker page may ask for). A photo with a longer side is
therefore scaled down once, the first time a picture of it is asked for (its JPEG decoded at a
reduced scale, see ``datasets.load_rgb``), and the result is kept in the project's ``scaled/``
folder, so a restarted server or another server process reads the small copy instead. In memory,
photos are kept within a budget of bytes (``PHOTO_CACHE_BYTES``), not a count, and only one photo
is decoded at a time per process: the memory of a serving process stays bounded however many and
however large the photos are. Coordinates stay those of the original photo (:class:`Photo`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from crowdpatch.datasets import load_rgb
from crowdpatch.datasets.images import image_size
from crowdpatch.server.byte_cache import ByteLRU

SCALED_SIDE_PX = 2400
"""Longest side a photo is kept at: the widest picture a task shows (``images.MAX_DEVICE_PX``)."""
SCALED_DIR = "scaled"
"""The project's folder of scaled photos (a cache: deleting it costs only the time to scale them again)."""
SCALED_JPEG_QUALITY = 95
PHOTO_CACHE_BYTES = 64 * 2**20
"""Decoded photos kept in memory per process: four or five scaled large photos, or thousands of small ones."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Photo:
    """A photo's pixels, perhaps scaled down, and the size of the original, whose pixels every coordinate counts."""

    pixels: Image.Image
    width: int
    height: int

    @property
    def scale(self) -> float:
        """Pixels of ``pixels`` per pixel of the original (1.0: not scaled)."""
        return self.pixels.width / self.width

    @property
    def nbytes(self) -> int:
        return self.pixels.width * self.pixels.height * len(self.pixels.getbands())


class PhotoStore:
    """The photos of one project's images by path: from memory, from ``scaled/``, or decoded (and scaled) once."""

    def __init__(self, project_dir: Path, budget: int = PHOTO_CACHE_BYTES):
        self.folder = Path(project_dir) / SCALED_DIR
        self.memory: ByteLRU[Photo] = ByteLRU(budget)
        self.scaled = 0
        """Photos this process scaled from their original (the others came from memory or ``scaled/``)."""
        self._decoding = threading.Lock()
        self._cannot_keep: str | None = None

    def photo(self, path: str) -> Photo:
        photo = self.memory.get(path)
        if photo is None:
            with self._decoding:  # one decode at a time: the memory of concurrent decodes stays bounded
                photo = self.memory.get(path)  # decoded by the thread that held the lock before
                if photo is None:
                    photo = self._load(Path(path))
                    self.memory.put(path, photo, photo.nbytes)
        return photo

    def scaled_file(self, path: str | Path) -> Path:
        """Where the scaled copy of the photo at ``path`` is kept (named by its path: one file per image)."""
        return self.folder / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.jpg"

    def _load(self, path: Path) -> Photo:
        width, height = image_size(path)
        if max(width, height) <= SCALED_SIDE_PX:
            return Photo(Image.fromarray(load_rgb(path)), width, height)
        kept = self.scaled_file(path)
        pixels = self._read_kept(kept, path)
        if pixels is None:
            pixels = Image.fromarray(load_rgb(path, max_side=SCALED_SIDE_PX))
            self.scaled += 1
            self._keep(kept, pixels)
        return Photo(pixels, width, height)

    @staticmethod
    def _read_kept(kept: Path, original: Path) -> Image.Image | None:
        """The scaled copy, when there is one at least as new as the photo and it reads whole; None otherwise."""
        try:
            if kept.stat().st_mtime < original.stat().st_mtime:
                return None
            with Image.open(kept) as image:
                return image.convert("RGB")
        except Exception:  # noqa: BLE001 - missing, cut short by a full disk, damaged: scaled again
            return None

    def _keep(self, kept: Path, pixels: Image.Image) -> None:
        """Write the scaled copy whole or not at all (a full disk or a read-only folder: drawn from memory only)."""
        partial = kept.with_name(f".{kept.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            self.folder.mkdir(exist_ok=True)
            pixels.save(partial, format="JPEG", quality=SCALED_JPEG_QUALITY, subsampling=0)
            os.replace(partial, kept)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            if self._cannot_keep is None:
                log.warning("scaled photos cannot be kept in %s (%s): each is scaled again after a restart",
                            self.folder, exc)  # fmt: skip
            self._cannot_keep = str(exc)
