"""The built-in biased benchmark: small objects on backgrounds that predict the class in training.

Two object classes are pasted at random scale and position on two background types, "land" and
"water". In training, class 0 sits on land and class 1 on water in ``agreement`` of the images,
so the background is a shortcut a classifier can take instead of looking at the object; in
validation and test the four (class, background) groups are balanced, so a model that took the
shortcut fails on the bias-conflicting groups. The pasted object's pixels are saved as the
ground-truth mask. Everything is drawn from one seed, offline, so the same spec gives
byte-identical files anywhere.
"""

from __future__ import annotations

import colorsys
import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from crowdpatch.datasets.folder import IMAGE_EXTENSIONS
from crowdpatch.datasets.images import load_rgb
from crowdpatch.datasets.masks import MASK_OBJECT, load_mask

CLASSES = ("blob", "star")
"""Labels of the procedural classes, in class-index order."""
BACKGROUNDS = ("land", "water")
"""BACKGROUNDS[c] is the background class c agrees with in training."""

# Hue ranges (degrees) of each procedural class's colours: warm blobs, violet stars, so that in
# colour mode the class shows in colour too; grey_objects removes that cue.
_CLASS_HUES = ((0.0, 45.0), (270.0, 330.0))


@dataclass(frozen=True)
class CutoutSource:
    """A folder of real photos with object masks (same file stem), used as one object class."""

    label: str
    """Class label written to labels.csv for objects cut from this source."""
    images_dir: Path
    """Photos."""
    masks_dir: Path
    """Masks, read with load_mask (any size: resized to the photo); only MASK_OBJECT pixels are cut out."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything that decides the benchmark's files; the same spec always gives the same bytes."""

    n_images: int = 200
    """Images over all splits."""
    size: int = 64
    """Side of the square images, pixels (64-96 trains on a CPU in minutes)."""
    agreement: float = 0.99
    """Share of TRAINING images whose background is the one their class goes with (the shortcut's strength)."""
    object_scale: tuple[float, float] = (0.2, 0.35)
    """Range of the object's side (longer side for cut-outs) as a share of the image side, drawn uniformly."""
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Shares of train, val and test images."""
    grey_objects: bool = True
    """Paste objects in grey, so only shape and texture tell the classes apart (a stronger shortcut)."""
    seed: int = 0
    """Seed of every random draw."""
    cutouts: tuple[CutoutSource, ...] = ()
    """Empty: procedural classes ("blob", "star"). Exactly two sources: real cut-outs, one class each."""

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"n_images must be at least 1, got {self.n_images}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {self.size}")
        if not 0.0 <= self.agreement <= 1.0:
            raise ValueError(f"agreement must be in [0, 1], got {self.agreement}")
        low, high = self.object_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"object_scale must satisfy 0 < low <= high <= 1, got {self.object_scale}")
        if len(self.splits) != 3 or min(self.splits) < 0 or not math.isclose(sum(self.splits), 1.0, abs_tol=1e-6):
            raise ValueError(f"splits must be three non-negative shares summing to 1, got {self.splits}")
        if len(self.cutouts) not in (0, 2):
            raise ValueError(f"cutouts must hold exactly 0 or 2 sources (one per class), got {len(self.cutouts)}")
        if len(self.cutouts) == 2 and self.cutouts[0].label == self.cutouts[1].label:
            raise ValueError(f"the two cut-out sources need different labels, both are {self.cutouts[0].label!r}")

    @property
    def labels(self) -> tuple[str, str]:
        """Class labels in class-index order."""
        if self.cutouts:
            return (self.cutouts[0].label, self.cutouts[1].label)
        return CLASSES


SHAPES_DEFAULTS = {"n_images": 1500, "size": 64, "object_scale": (0.2, 0.35)}
"""The procedural benchmark: small shapes, 64 px, trained on as rendered."""

CUTOUT_DEFAULTS = {"n_images": 1600, "size": 128, "object_scale": (0.35, 0.6)}
"""The real cut-out benchmark (horses against COCO objects, say).

Real objects are thin and irregular, and two classes of real photos are far harder to tell apart
than a blob from a star: at a fifth to a third of a 64 px side, exact masks fixed the shortcut in two
seeds of three and a small CPU model collapsed onto the background in the third. At 35-60 % of the
side the object is large enough to learn and the background still covers most of the image, so
plain training takes the shortcut every time. Images are drawn at 128 px, so workers see the
object's outline, and trained on at 64 px (`experiment --image-size 64`). 1,600 images give 960
training images (about 5 of them bias-conflicting per class at 99 % agreement) and 80 validation
and test images per group, enough that selecting on validation worst-group accuracy is not noise.
"""


def builtin_spec(
    cutouts: tuple[CutoutSource, ...] = (),
    n_images: int | None = None,
    size: int | None = None,
    object_scale: tuple[float, float] | None = None,
    **fixed,
) -> BenchmarkSpec:
    """The built-in benchmark's spec: what is not given takes the defaults of its kind (shapes or cut-outs)."""
    defaults = CUTOUT_DEFAULTS if cutouts else SHAPES_DEFAULTS
    return BenchmarkSpec(
        n_images=defaults["n_images"] if n_images is None else n_images,
        size=defaults["size"] if size is None else size,
        object_scale=defaults["object_scale"] if object_scale is None else object_scale,
        cutouts=cutouts,
        **fixed,
    )


@dataclass(frozen=True)
class Scene:
    """One rendered benchmark image."""

    image: np.ndarray
    """HxWx3 uint8 RGB."""
    mask: np.ndarray
    """HxW bool: exactly the pixels the object was pasted on."""
    background: np.ndarray
    """The image before the object was pasted, so a caller can check what the object changed."""


def _split_counts(spec: BenchmarkSpec) -> tuple[int, int, int]:
    n_train = round(spec.n_images * spec.splits[0])
    n_val = min(round(spec.n_images * spec.splits[1]), spec.n_images - n_train)
    return n_train, n_val, spec.n_images - n_train - n_val


def plan_benchmark(spec: BenchmarkSpec) -> list[tuple[str, int, str]]:
    """(split, class index, background) of every image, in file order: train, then val, then test.

    Training classes alternate (balanced) and each class agrees with its background in
    round(agreement x its count) images; val and test cycle through the four groups.
    """
    rng = np.random.default_rng(spec.seed)
    n_train, n_val, n_test = _split_counts(spec)
    train: list[tuple[int, str]] = []
    for class_index in (0, 1):
        n_class = len(range(class_index, n_train, 2))
        n_agree = round(spec.agreement * n_class)
        train += [(class_index, BACKGROUNDS[class_index])] * n_agree
        train += [(class_index, BACKGROUNDS[1 - class_index])] * (n_class - n_agree)
    groups = [(c, b) for c in (0, 1) for b in BACKGROUNDS]
    plan: list[tuple[str, int, str]] = []
    for split, items in (
        ("train", train),
        ("val", [groups[i % 4] for i in range(n_val)]),
        ("test", [groups[i % 4] for i in range(n_test)]),
    ):
        plan += [(split, *items[i]) for i in rng.permutation(len(items))]
    return plan


def render_background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size uint8 RGB texture: "water" (blue, smooth waves) or "land" (green/brown blotches)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "water":
        base = rng.uniform((15, 70, 140), (50, 120, 200)).astype(np.float32)
        waves = np.zeros((size, size), np.float32)
        for _ in range(3):
            angle = np.pi / 2 + rng.normal(0.0, 0.35)
            wavelength = size * rng.uniform(0.12, 0.35)
            wobble = 0.8 * np.sin(2 * np.pi * xx / (size * rng.uniform(0.3, 0.8)) + rng.uniform(0, 2 * np.pi))
            waves += np.sin(
                2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / wavelength + wobble + rng.uniform(0, 2 * np.pi)
            )
        shade = waves / 3
        highlight = 60.0 * np.clip(shade - 0.6, 0.0, None)
        image = base * (1 + 0.2 * shade)[:, :, None] + highlight[:, :, None]
        image += rng.normal(0.0, 4.0, (size, size, 1))
    elif kind == "land":
        green = rng.uniform((45, 95, 25), (90, 145, 60)).astype(np.float32)
        brown = rng.uniform((105, 75, 35), (150, 110, 70)).astype(np.float32)
        cells = int(rng.integers(3, 7))
        coarse = cv2.resize(rng.random((cells, cells), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        fine = cv2.resize(
            rng.random((cells * 3, cells * 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC
        )
        weight = np.clip((0.75 * coarse + 0.25 * fine - 0.5) * 3 + 0.5, 0.0, 1.0)[:, :, None]
        image = green * (1 - weight) + brown * weight
        image += rng.normal(0.0, 9.0, (size, size, 1)) + rng.normal(0.0, 3.0, (size, size, 3))
    else:
        raise ValueError(f"unknown background {kind!r}, expected one of {BACKGROUNDS}")
    return np.clip(image, 0, 255).astype(np.uint8)


def _class_colours(class_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A light and a dark colour of the same hue from the class's palette."""
    low, high = _CLASS_HUES[class_index]
    hue = rng.uniform(low, high) / 360.0
    saturation = rng.uniform(0.6, 1.0)
    value = rng.uniform(0.75, 1.0)
    light = np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32) * 255
    dark = np.array(colorsys.hsv_to_rgb(hue, saturation, value * rng.uniform(0.3, 0.5)), np.float32) * 255
    return light, dark


def render_procedural_object(class_index: int, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(side x side x 3 uint8 RGB, side x side bool mask) of a "blob" (0) or a "star" (1).

    Blobs are smooth radial-harmonic shapes with stripes; stars are spiky polygons with 5-8
    points and dots. Shape and texture both tell the classes apart.
    """
    centre = (side - 1) / 2
    if class_index == 0:
        angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        harmonics = np.arange(2, 5)
        amplitudes = rng.uniform(0.0, 0.15, harmonics.size)
        phases = rng.uniform(0, 2 * np.pi, harmonics.size)
        wiggle = (amplitudes[:, None] * np.cos(harmonics[:, None] * angles + phases[:, None])).sum(axis=0)
        radii = (side / 2) * (1 + wiggle) / (1 + amplitudes.sum())
    elif class_index == 1:
        points = int(rng.integers(5, 9))
        angles = rng.uniform(0, 2 * np.pi) + np.arange(2 * points) * np.pi / points
        radii = np.where(np.arange(2 * points) % 2 == 0, side / 2, side / 2 * rng.uniform(0.35, 0.55))
    else:
        raise ValueError(f"unknown class index {class_index}, expected 0 or 1")
    # Four fractional bits (shift=4) keep small polygons from snapping to a coarse pixel grid.
    vertices = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1)
    mask = np.zeros((side, side), np.uint8)
    cv2.fillPoly(mask, [np.round(vertices * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)

    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    light, dark = _class_colours(class_index, rng)
    if class_index == 0:
        angle = rng.uniform(0, np.pi)
        period = max(3.0, side * rng.uniform(0.18, 0.3))
        pattern = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi)) > 0
    else:
        spacing = max(3.0, side * rng.uniform(0.18, 0.28))
        radius = spacing * rng.uniform(0.25, 0.35)
        offset_x, offset_y = rng.uniform(0, spacing, 2)
        dx = (xx + offset_x) % spacing - spacing / 2
        dy = (yy + offset_y) % spacing - spacing / 2
        pattern = dx * dx + dy * dy < radius * radius
    rgb = np.where(pattern[:, :, None], dark, light).astype(np.uint8)
    return rgb, mask.astype(bool)


class CutoutPool:
    """The object cut-outs of one source, loaded on first use and kept small.

    Each cut-out is stored already shrunk to the largest size the benchmark can paste it at, so
    holding hundreds costs little and each photo is decoded once.
    """

    def __init__(self, source: CutoutSource, max_side: int) -> None:
        masks = {p.stem: p for p in sorted(Path(source.masks_dir).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        self.pairs = [
            (image, masks[image.stem])
            for image in sorted(Path(source.images_dir).iterdir())
            if image.suffix.lower() in IMAGE_EXTENSIONS and image.stem in masks
        ]
        if not self.pairs:
            raise ValueError(
                f"cut-out source {source.label!r}: no image/mask pairs in {source.images_dir} and {source.masks_dir}"
            )
        self.source = source
        self.max_side = max_side
        self.cache: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}

    def _cutout(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        if index not in self.cache:
            image_path, mask_path = self.pairs[index]
            rgb = load_rgb(image_path)
            obj = load_mask(mask_path, size=(rgb.shape[1], rgb.shape[0])) == MASK_OBJECT
            rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
            if rows.size == 0:
                self.cache[index] = None
            else:
                crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
                self.cache[index] = _fit(rgb[crop], obj[crop], min(self.max_side, max(rgb[crop].shape[:2])))
        return self.cache[index]

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random cut-out (RGB, bool mask), cropped to its mask's bounding box."""
        for index in rng.permutation(len(self.pairs)):
            cutout = self._cutout(int(index))
            if cutout is not None:
                return cutout
        raise ValueError(f"cut-out source {self.source.label!r}: every mask in {self.source.masks_dir} is empty")


def _fit(rgb: np.ndarray, mask: np.ndarray, longer_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale a cut-out so that its longer side is ``longer_side`` pixels."""
    height, width = mask.shape
    scale = longer_side / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size == (width, height):
        return np.ascontiguousarray(rgb), np.ascontiguousarray(mask)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(rgb), new_size, interpolation=interpolation)
    resized_mask = cv2.resize(mask.astype(np.uint8), new_size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return resized, resized_mask


def _paste(background: np.ndarray, rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Scene:
    """Paste the object at a random position fully inside the image."""
    size = background.shape[0]
    height, width = mask.shape
    y = int(rng.integers(0, size - height + 1))
    x = int(rng.integers(0, size - width + 1))
    image = background.copy()
    full_mask = np.zeros((size, size), bool)
    full_mask[y : y + height, x : x + width] = mask
    image[full_mask] = rgb[mask]
    return Scene(image=image, mask=full_mask, background=background)


def _grey(rgb: np.ndarray) -> np.ndarray:
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.round(luma).astype(np.uint8)[:, :, None], 3, axis=2)


def render_scene(
    class_index: int,
    background: str,
    spec: BenchmarkSpec,
    rng: np.random.Generator,
    cutouts: tuple[CutoutPool, CutoutPool] | None = None,
) -> Scene:
    """One image of the benchmark: an object of ``class_index`` on a ``background`` texture."""
    low, high = spec.object_scale
    side = max(4, round(rng.uniform(low, high) * spec.size))
    backdrop = render_background(background, spec.size, rng)
    if cutouts is None:
        rgb, mask = render_procedural_object(class_index, side, rng)
    else:
        rgb, mask = _fit(*cutouts[class_index].sample(rng), side)
    if spec.grey_objects:
        rgb = _grey(rgb)
    return _paste(backdrop, rgb, mask, rng)


def generate_benchmark(out_dir: Path, spec: BenchmarkSpec, progress: Callable[[int], None] | None = None) -> Path:
    """Write the benchmark under ``out_dir`` and return the path of its ``labels.csv``.

    Files: ``images/NNNNN.png``, ``masks/NNNNN.png`` (0 background, 255 object) and
    ``labels.csv`` with columns path (relative to ``images/``), label, split, background: the
    layout :func:`load_folder_dataset` reads. ``progress(1)`` is called after each image.
    """
    out_dir = Path(out_dir)
    images_dir, masks_dir = out_dir / "images", out_dir / "masks"
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    max_side = math.ceil(spec.object_scale[1] * spec.size)
    pools = (CutoutPool(spec.cutouts[0], max_side), CutoutPool(spec.cutouts[1], max_side)) if spec.cutouts else None
    labels = spec.labels
    rows: list[tuple[str, str, str, str]] = []
    for index, (split, class_index, background) in enumerate(plan_benchmark(spec)):
        # One generator per image: an image's pixels do not depend on how many came before it.
        scene = render_scene(class_index, background, spec, np.random.default_rng((spec.seed, index)), pools)
        name = f"{index:05d}.png"
        Image.fromarray(scene.image).save(images_dir / name)
        Image.fromarray(scene.mask.astype(np.uint8) * 255).save(masks_dir / name)
        rows.append((name, labels[class_index], split, background))
        if progress is not None:
            progress(1)
    labels_csv = out_dir / "labels.csv"
    with labels_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("path", "label", "split", "background"))
        writer.writerows(rows)
    return labels_csv
