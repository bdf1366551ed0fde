"""Label Studio interop: exported annotations to ground-truth masks, crowdpatch masks to pre-annotations.

Brush results use Label Studio's own run-length format (a bit stream over the RGBA pixels, not
COCO RLE); it is encoded and decoded by the ``brush`` module of ``label-studio-converter``
(Label Studio's own package; extra ``labelstudio``) so the format follows Label Studio's
releases. Polygon points are in percent of the image size and are rasterised here at pixel
centres: a pixel is object when its centre lies inside the polygon (even-odd rule).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image

from crowdpatch.datasets.folder import DatasetError, InputProblem

MODEL_VERSION = "crowdpatch"
# Label Studio stores an uploaded file as /data/upload/PROJECT/<8 hex>-<original name>.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def _brush():
    try:
        from label_studio_converter import brush
    except ImportError as exc:
        raise ImportError(
            "Label Studio brush masks need label-studio-converter: pip install 'crowdpatch[labelstudio]'"
        ) from exc
    return brush


def decode_brush(rle: Sequence[int], width: int, height: int) -> np.ndarray:
    """A brush result's mask (bool, H x W): its alpha channel, painted where above half opacity."""
    pixels = _brush().decode_rle(list(rle))
    if pixels.size != width * height * 4:
        raise ValueError(f"brush RLE holds {pixels.size} values, expected {width} x {height} x 4")
    return pixels.reshape(height, width, 4)[:, :, 3] > 127


def encode_brush(binary: np.ndarray) -> list[int]:
    """The brush RLE of a bool mask, painted pixels opaque white (as Label Studio draws them)."""
    values = np.where(np.asarray(binary, dtype=bool), 255, 0).astype(np.uint8).ravel()
    return [int(v) for v in _brush().encode_rle(np.repeat(values, 4))]


def rasterize_polygon(points_percent: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """Pixels (bool, H x W) whose centre lies inside a polygon given in percent of the image size."""
    points = np.asarray(points_percent, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), dtype=bool)
    if len(points) < 3:
        return mask
    xs, ys = points[:, 0] / 100.0 * width, points[:, 1] / 100.0 * height
    # Only the polygon's bounding box can hold inside pixels.
    x0, x1 = max(int(np.floor(xs.min())), 0), min(int(np.ceil(xs.max())), width)
    y0, y1 = max(int(np.floor(ys.min())), 0), min(int(np.ceil(ys.max())), height)
    if x0 >= x1 or y0 >= y1:
        return mask
    cx, cy = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    inside = np.zeros(cx.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(zip(xs, ys), zip(np.roll(xs, -1), np.roll(ys, -1))):
        if ay == by:
            continue
        crosses = (ay > cy) != (by > cy)
        x_at = ax + (cy - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (cx < x_at)
    mask[y0:y1, x0:x1] = inside
    return mask


def _result_mask(result: dict[str, Any]) -> np.ndarray | None:
    """The mask of one brush or polygon result; None for other result types."""
    kind = str(result.get("type", "")).lower()
    if kind not in ("brushlabels", "polygonlabels"):
        return None
    width, height = int(result["original_width"]), int(result["original_height"])
    value = result["value"]
    if kind == "brushlabels":
        return decode_brush(value["rle"], width, height)
    return rasterize_polygon(value["points"], width, height)


def task_image_stem(task: dict[str, Any]) -> str:
    """The file stem of a task's image (its URL or path), which names its mask file.

    For a file uploaded to Label Studio, the original name's stem (without the upload prefix).
    """
    data = task.get("data", {})
    source = data.get("image") or next((v for v in data.values() if isinstance(v, str)), "")
    parsed = urlparse(source)
    # Local-storage URLs carry the path in the query (?d=folder/file.jpg).
    path = unquote(parsed.query.split("d=", 1)[1]) if "d=" in parsed.query else unquote(parsed.path)
    stem = Path(path).stem
    return _UPLOAD_PREFIX.sub("", stem) if path.startswith("/data/upload/") else stem


def task_mask(task: dict[str, Any]) -> np.ndarray | None:
    """The union of the brush and polygon results of a task's first non-cancelled annotation."""
    for annotation in task.get("annotations", []):
        if annotation.get("was_cancelled"):
            continue
        masks = [m for m in (_result_mask(r) for r in annotation.get("result", [])) if m is not None]
        if masks:
            union = masks[0].copy()
            for mask in masks[1:]:
                if mask.shape != union.shape:
                    raise ValueError(f"results of sizes {union.shape} and {mask.shape} in one annotation")
                union |= mask
            return union
    return None


def import_masks(export_file: Path, masks_dir: Path) -> tuple[list[Path], list[InputProblem]]:
    """Write one 0/255 PNG per annotated task into ``masks_dir``; tasks without a usable mask are reported."""
    from crowdpatch.masks.export import write_binary_png

    export_file = Path(export_file)
    if not export_file.is_file():
        raise DatasetError(f"{export_file}: Label Studio export not found")
    try:
        tasks = json.loads(export_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{export_file}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(tasks, list):
        raise DatasetError(f"{export_file}: expected a JSON list of tasks (Label Studio's JSON export)")
    masks_dir = Path(masks_dir)
    masks_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    problems: list[InputProblem] = []
    for number, task in enumerate(tasks, start=1):
        source = f"{export_file.name} task {task.get('id', number) if isinstance(task, dict) else number}"
        try:
            stem = task_image_stem(task)
            mask = task_mask(task)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(InputProblem(source, f"malformed result: {exc!r}"))
            continue
        if not stem or mask is None:
            problems.append(InputProblem(source, "no image or no brush/polygon annotation"))
            continue
        destination = masks_dir / f"{stem}.png"
        write_binary_png(destination, mask)
        written.append(destination)
    return written, problems


def brush_task(image_url: str, binary: np.ndarray, label: str, from_name: str, to_name: str) -> dict[str, Any]:
    """One Label Studio task whose prediction is the mask as a brush result."""
    height, width = binary.shape
    result = {
        "type": "brushlabels",
        "from_name": from_name,
        "to_name": to_name,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": encode_brush(binary), "brushlabels": [label]},
    }
    return {"data": {"image": image_url}, "predictions": [{"model_version": MODEL_VERSION, "result": [result]}]}


def export_tasks(
    masks_dir: Path,
    images_url_prefix: str,
    out: Path,
    image_suffix: str = ".jpg",
    label: str = "object",
    from_name: str = "tag",
    to_name: str = "image",
) -> int:
    """A tasks JSON with one brush pre-annotation per mask PNG (object where the value is above 127)."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: masks folder not found")
    paths = sorted(masks_dir.glob("*.png"))
    if not paths:
        raise DatasetError(f"{masks_dir}: no .png mask")
    prefix = images_url_prefix if images_url_prefix.endswith(("/", "=")) else images_url_prefix + "/"
    tasks = []
    for path in paths:
        with Image.open(path) as image:
            binary = np.asarray(image.convert("L")) > 127
        tasks.append(brush_task(f"{prefix}{path.stem}{image_suffix}", binary, label, from_name, to_name))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(tasks), encoding="utf-8")
    return len(tasks)
