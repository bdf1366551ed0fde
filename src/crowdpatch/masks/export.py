"""Attention masks to files: soft and binary PNG, NumPy arrays, COCO JSON with RLE segmentations.

Every writer goes through a temporary file in the target's folder and ``os.replace``: a crash or
a full disk leaves either the old file or the new one, never a truncated mask that a later
training run would read as valid.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask


@dataclass
class CocoImage:
    """One image and its binary attention mask, as one COCO image + one annotation."""

    image_id: int
    file_name: str
    width: int
    height: int
    binary: np.ndarray
    score: float = 1.0
    category: str = "object"


def mask_names(paths: dict[int, str], images_dir: str | None = None) -> dict[int, str]:
    """Output file names (without extension) for a project's images, by image id.

    A mask keeps its image's file stem (``000.jpg`` -> ``000``), so a user finds it by name.
    Images that share a stem are told apart by their folder under ``images_dir``
    (``a/000.jpg`` -> ``a_000``), and, in one folder, by their extension (``000.png`` ->
    ``000_png``); ``masks/index.csv`` (:func:`write_mask_index`) says which file is which image.
    """
    stems = Counter(Path(path).stem for path in paths.values())
    names: dict[int, str] = {}
    for image_id, path in paths.items():
        file = Path(path)
        if stems[file.stem] == 1:
            names[image_id] = file.stem
            continue
        try:
            relative = file.relative_to(images_dir) if images_dir else Path(file.name)
        except ValueError:
            relative = Path(*file.parts[-2:])
        names[image_id] = _safe_name("_".join((*relative.parent.parts, file.stem)))
    taken = Counter(names.values())
    for image_id, name in names.items():
        if taken[name] > 1:
            names[image_id] = _safe_name(f"{name}_{Path(paths[image_id]).suffix.lstrip('.')}")
    taken = Counter(names.values())
    # Still the same (one file listed twice under two spellings): the image id settles it.
    return {image_id: name if taken[name] == 1 else f"{name}_{image_id}" for image_id, name in names.items()}


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "image"


def write_mask_index(path: str | os.PathLike[str], rows: list[dict[str, str]]) -> None:
    """``masks/index.csv``: one row per image (its path, then each mask file relative to ``masks/``)."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["image"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(path, lambda stream: stream.write(text.getvalue().encode("utf-8")))


def write_soft_png(path: str | os.PathLike[str], soft: np.ndarray) -> None:
    """A soft mask in [0, 1] as an 8-bit grey PNG (value x 255, rounded)."""
    values = np.asarray(soft, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected an H x W soft mask, got shape {values.shape}")
    # Float rounding (a mean of ones at 1 + 1e-7) is not an error; anything beyond it is.
    if not np.isfinite(values).all() or values.min() < -1e-6 or values.max() > 1.0 + 1e-6:
        raise ValueError("soft mask values must be finite and in [0, 1]")
    pixels = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    _write_atomic(path, lambda stream: Image.fromarray(pixels).save(stream, format="PNG"))


def write_binary_png(path: str | os.PathLike[str], binary: np.ndarray) -> None:
    """A bool mask as a grey PNG with 0 (background) and 255 (object)."""
    _check_binary(binary)
    pixels = np.where(binary, 255, 0).astype(np.uint8)
    _write_atomic(path, lambda stream: Image.fromarray(pixels).save(stream, format="PNG"))


def write_npy(path: str | os.PathLike[str], soft: np.ndarray) -> None:
    """A soft mask as a float32 ``.npy`` array (no 8-bit quantisation, for training)."""
    values = np.asarray(soft, dtype=np.float32)
    _write_atomic(path, lambda stream: np.save(stream, values, allow_pickle=False))


def encode_rle(binary: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding of a bool mask, with ``counts`` as text so it fits in JSON."""
    _check_binary(binary)
    rle = coco_mask.encode(np.asfortranarray(binary.astype(np.uint8)))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """The bool mask of a COCO RLE (``counts`` as text or bytes)."""
    counts = rle["counts"]
    compressed = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        # pycocotools' Cython array predates NumPy 2's __array__(copy=...) protocol and warns on
        # every decode; the result is correct, and the library is unmaintained (cocoapi #686).
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning)
        return coco_mask.decode(compressed).astype(bool)


def coco_document(images: list[CocoImage]) -> dict[str, Any]:
    """The COCO dataset dictionary (images, categories, annotations with RLE) for ``images``.

    Categories get ids 1, 2, ... in order of first appearance (COCO reserves 0 for background).
    Each image gets one annotation, even when its mask is empty: an image the crowd found no
    target in is a result too, and dropping it would hide that from evaluation.
    """
    categories: dict[str, int] = {}
    image_entries = []
    annotations = []
    for annotation_id, image in enumerate(images, start=1):
        if image.binary.shape != (image.height, image.width):
            raise ValueError(
                f"image {image.image_id}: mask shape {image.binary.shape} is not (height, width) = "
                f"({image.height}, {image.width})"
            )
        category_id = categories.setdefault(image.category, len(categories) + 1)
        rle = encode_rle(image.binary)
        compressed = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        image_entries.append(
            {"id": image.image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
        )
        annotations.append(
            {
                "id": annotation_id,
                "image_id": image.image_id,
                "category_id": category_id,
                "segmentation": rle,
                "area": float(coco_mask.area(compressed)),
                "bbox": [float(v) for v in coco_mask.toBbox(compressed)],
                "iscrowd": 0,
                "score": float(image.score),
            }
        )
    return {
        "images": image_entries,
        "categories": [{"id": cid, "name": name, "supercategory": name} for name, cid in categories.items()],
        "annotations": annotations,
    }


def write_coco_json(path: str | os.PathLike[str], images: list[CocoImage]) -> None:
    """``coco_document(images)`` as a JSON file that ``pycocotools.coco.COCO`` loads."""
    document = coco_document(images)
    _write_atomic(path, lambda stream: stream.write(json.dumps(document).encode("utf-8")))


def _check_binary(binary: np.ndarray) -> None:
    # Requiring bool stops a soft map or a 0/255 PNG array from being binarised silently.
    if not isinstance(binary, np.ndarray) or binary.dtype != np.bool_ or binary.ndim != 2:
        raise ValueError(
            f"expected an H x W bool mask, got shape {getattr(binary, 'shape', None)} "
            f"dtype {getattr(binary, 'dtype', type(binary).__name__)}"
        )


def _write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp makes the file private (0600); a mask is an ordinary output others read.
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
