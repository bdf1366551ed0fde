"""Saliency maps as step 1 stores them: one 8-bit PNG per image, read back as floats in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from crowdpatch.datasets import ImageLoadError


def load_saliency(path: str | Path) -> np.ndarray:
    """A stored saliency map in [0, 1]; a damaged or missing file is an :class:`ImageLoadError` naming it."""
    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.float32) / 255.0
    # Pillow raises several types on malformed data (OSError, SyntaxError, ValueError): one meaning here.
    except Exception as exc:
        raise ImageLoadError(Path(path), f"saliency map unreadable: {exc}") from exc
