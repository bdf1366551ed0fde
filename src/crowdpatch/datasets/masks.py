"""Reading ground-truth masks the way segmentation datasets store them.

Datasets encode "object" in many ways, and a mask read the wrong way is worse than no mask: an
empty ground truth makes the simulated crowd answer "no" everywhere, every gold question expect
"no", and the IoU of an empty crowd mask look perfect. So the encoding is recognized from the
file itself, and every reading says which encoding it found and how many objects it holds:

- **palette** PNGs (DAVIS, PASCAL VOC, most segmentation sets) by palette *index*, never by
  colour: 0 is background, 255 is VOC's "void" band (ignore), any other index is an object;
- **0/1** masks (any bit depth): nonzero is object;
- **0/255** grey masks, where exactly 128 is an ignore band (GrabCut's unlabeled border), and any
  other mask of two grey levels, whose brighter level is the object;
- **label maps** (grey, a few small values such as 0/1/2): nonzero is object, 255 is void;
- **grey** masks with many levels (JPEG-noisy or soft): above 127 is object, 128 is ignore;
- **16-bit** masks: nonzero is object (instance ids), or above half range when soft;
- **colour** (RGB) masks: any non-black colour is object, VOC's void colour is ignore; an RGBA
  file whose alpha varies is read by its alpha (a cut-out).

Several objects in one mask (instance indices, colours) are read as their union.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from crowdpatch.datasets.images import DEFAULT_MAX_PIXELS, ImageLoadError, _decode, _open_checked

MASK_BACKGROUND = 0
MASK_OBJECT = 1
MASK_IGNORE = 255
"""Mask value for pixels that count neither as object nor as background (e.g. GrabCut's border band)."""

VOID_INDEX = 255
"""PASCAL VOC's "void" palette index (object borders and unlabelled pixels)."""
VOID_COLOUR = (224, 224, 192)
"""The colour VOC's palette gives the void index, for VOC masks saved as RGB."""
GREY_OBJECT_ABOVE = 127
"""Grey masks with many levels: the midpoint, which also absorbs JPEG noise in 0/255 masks."""
GREY_IGNORE_VALUE = 128
LABEL_MAP_MAX_VALUES = 32
"""A grey mask with at most this many distinct values, all below 128 (but 255), is a label map."""
COLOUR_OBJECT_ABOVE = 64
"""A colour mask's pixel is object when its brightest channel exceeds this: dataset colours sit at
128 and above, JPEG noise around black stays far below."""
COLOUR_TOLERANCE = 24
"""How far (per channel) a JPEG-stored colour may stray from VOC's void colour and still be void."""
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
EXAMPLES_SHOWN = 3


@dataclass(frozen=True)
class MaskReading:
    """A ground-truth mask as HxW codes (MASK_BACKGROUND / MASK_OBJECT / MASK_IGNORE), and how it was read."""

    codes: np.ndarray
    encoding: str
    """palette, 0/1, 0/255, two-level, label map, grey, 16-bit, colour, alpha, or empty (all zero)."""
    objects: int
    """Distinct object labels the file holds (palette indices, values or colours); 0 means no object."""
    stored_size: tuple[int, int]
    """(width, height) of the file, before any resize to its photo."""

    @property
    def has_object(self) -> bool:
        return bool(np.any(self.codes == MASK_OBJECT))

    @property
    def all_ignore(self) -> bool:
        return bool(np.all(self.codes == MASK_IGNORE))


def read_mask(path: Path, size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> MaskReading:
    """Read a ground-truth mask file (see the module docstring for the encodings recognized).

    ``size`` is the (width, height) of the photo the mask belongs to; a mask stored at another
    size (Weizmann horse masks are smaller than their photos) is resized with nearest neighbour.
    Raises :class:`ImageLoadError` for a file that cannot be read as an image.
    """
    path = Path(path)
    with _open_checked(path, max_pixels) as opened:
        image = _decode(path, opened)
        stored_size = image.size
        codes, encoding, objects = _classify(image)
    if size is not None and (codes.shape[1], codes.shape[0]) != tuple(size):
        codes = np.array(Image.fromarray(codes).resize(tuple(size), Image.Resampling.NEAREST))
    return MaskReading(codes, encoding, objects, stored_size)


def load_mask(path: Path, size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The mask's HxW uint8 codes: MASK_BACKGROUND, MASK_OBJECT or MASK_IGNORE (see :func:`read_mask`)."""
    return read_mask(path, size, max_pixels).codes


def _codes(object_pixels: np.ndarray, ignore_pixels: np.ndarray | None = None) -> np.ndarray:
    codes = np.where(object_pixels, MASK_OBJECT, MASK_BACKGROUND).astype(np.uint8)
    if ignore_pixels is not None:
        codes[ignore_pixels] = MASK_IGNORE
    return codes


def _classify(image: Image.Image) -> tuple[np.ndarray, str, int]:
    if image.mode in ("P", "PA"):
        return _palette(image)
    if image.mode == "1":
        values = np.asarray(image, dtype=np.uint8)
        return _codes(values > 0), "0/1", int(values.any())
    if image.mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit(np.asarray(image).astype(np.int64))
    if image.mode in ("L", "LA"):
        return _grey(np.asarray(image.getchannel("L") if image.mode == "LA" else image))
    rgba = np.asarray(image.convert("RGBA"))
    alpha = rgba[:, :, 3]
    if alpha.min() < 255 and alpha.max() > 0 and np.unique(alpha).size > 1:
        return _codes(alpha > GREY_OBJECT_ABOVE), "alpha", int((alpha > GREY_OBJECT_ABOVE).any())
    rgb = rgba[:, :, :3].astype(np.int16)
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        return _grey(rgb[:, :, 0].astype(np.uint8))
    return _colour(rgb)


def _palette(image: Image.Image) -> tuple[np.ndarray, str, int]:
    indices = np.asarray(image.getchannel("P") if image.mode == "PA" else image)
    present = set(np.unique(indices).tolist())
    others = present - {0, VOID_INDEX}
    palette = image.getpalette() or []
    void_colour = tuple(palette[3 * VOID_INDEX : 3 * VOID_INDEX + 3]) if len(palette) >= 3 * (VOID_INDEX + 1) else None
    # 255 is VOC's void when other objects are labelled beside it, or when the palette gives it VOC's
    # void colour; a palette mask holding only 0 and 255 is a binary mask stored with a palette.
    void = VOID_INDEX in present and (bool(others) or void_colour == VOID_COLOUR)
    if void:
        return _codes((indices != 0) & (indices != VOID_INDEX), indices == VOID_INDEX), "palette", len(others)
    objects = len(present - {0})
    return _codes(indices != 0), "palette", objects


def _grey(values: np.ndarray) -> tuple[np.ndarray, str, int]:
    distinct = np.unique(values)
    if distinct.max(initial=0) == 0:
        return _codes(values > 0), "empty", 0
    if distinct.max() <= 1:
        return _codes(values > 0), "0/1", 1
    if set(distinct.tolist()) <= {0, GREY_IGNORE_VALUE, 255}:
        return _codes(values == 255, values == GREY_IGNORE_VALUE), "0/255", 1
    if distinct.size == 2:
        # Two levels (e.g. 1/255 after a lossy round trip): the brighter one is the object.
        return _codes(values == distinct[1]), "two-level", 1
    below_void = distinct[distinct != VOID_INDEX]
    if distinct.size <= LABEL_MAP_MAX_VALUES and below_void.max() < GREY_IGNORE_VALUE:
        # Small labels, with 255 beside them as VOC's void when present.
        void = values == VOID_INDEX
        return _codes((values != 0) & ~void, void), "label map", int(np.count_nonzero(below_void))
    object_pixels = values > GREY_OBJECT_ABOVE
    return _codes(object_pixels, values == GREY_IGNORE_VALUE), "grey", int(object_pixels.any())


def _sixteen_bit(values: np.ndarray) -> tuple[np.ndarray, str, int]:
    distinct = np.unique(values)
    if distinct.size <= 256:
        return _codes(values > 0), "16-bit", int(np.count_nonzero(distinct))
    object_pixels = values > 32767
    return _codes(object_pixels), "16-bit", int(object_pixels.any())


def _colour(rgb: np.ndarray) -> tuple[np.ndarray, str, int]:
    void = np.all(np.abs(rgb - np.array(VOID_COLOUR, np.int16)) <= COLOUR_TOLERANCE, axis=2)
    object_pixels = (rgb.max(axis=2) > COLOUR_OBJECT_ABOVE) & ~void
    # Objects are counted by colour, coarsely, so JPEG noise does not add objects.
    coarse = (rgb[object_pixels] // 64).astype(np.int32)
    keys = coarse[:, 0] * 16 + coarse[:, 1] * 4 + coarse[:, 2]
    counts = np.bincount(keys, minlength=64) if keys.size else np.zeros(64, np.int64)
    objects = int(np.count_nonzero(counts >= max(1, 0.002 * rgb.shape[0] * rgb.shape[1])))
    return _codes(object_pixels, void if void.any() else None), "colour", objects


@dataclass
class MaskSurvey:
    """How a set of ground-truth masks was read, and what in it is suspicious."""

    total: int = 0
    encodings: Counter = field(default_factory=Counter)
    with_object: int = 0
    empty: list[str] = field(default_factory=list)
    all_void: list[str] = field(default_factory=list)
    several_objects: list[str] = field(default_factory=list)
    other_aspect: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: Path, reading: MaskReading, photo_size: tuple[int, int]) -> None:
        self.total += 1
        self.encodings[reading.encoding] += 1
        name = Path(path).name
        if reading.all_ignore:
            self.all_void.append(name)
        elif reading.has_object:
            self.with_object += 1
        else:
            self.empty.append(name)
        if reading.objects > 1:
            self.several_objects.append(name)
        if _aspect_differs(reading.stored_size, photo_size):
            (w, h), (pw, ph) = reading.stored_size, photo_size
            self.other_aspect.append(f"{name} ({w} x {h} for a {pw} x {ph} photo)")

    def description(self) -> str:
        """One line, e.g. '40 masks: palette, objects in 40'."""
        if not self.total:
            return "no ground-truth masks"
        kinds = ", ".join(
            f"{kind} ({n})" if len(self.encodings) > 1 else kind for kind, n in self.encodings.most_common()
        )
        return f"{self.total} masks: {kinds}, objects in {self.with_object}"

    def warnings(self) -> list[str]:
        """One line per suspicious finding, each naming the count and a few files."""
        lines = []
        unusable = len(self.empty) + len(self.all_void)
        if self.total and unusable * 2 > self.total:
            lines.append(
                f"most ground truths hold no object: {unusable} of {self.total} "
                f"({_examples(self.empty + self.all_void)}); "
                "check how the masks mark the object (palette index, value or colour)"
            )
        elif self.empty:
            lines.append(
                f"{len(self.empty)} ground truths hold no object ({_examples(self.empty)}): they are scored apart"
            )
        if self.all_void:
            lines.append(
                f"{len(self.all_void)} masks are all 'void' or ignore ({_examples(self.all_void)}): "
                "those images have no usable ground truth"
            )
        if self.several_objects:
            lines.append(
                f"{len(self.several_objects)} masks hold several objects ({_examples(self.several_objects)}): "
                "their union is the object"
            )
        if self.other_aspect:
            lines.append(
                f"{len(self.other_aspect)} masks have another aspect ratio than their photo "
                f"({_examples(self.other_aspect)}): resized anyway; check they belong to these photos"
            )
        return lines


def survey_masks(
    pairs: Iterable[tuple[Path, tuple[int, int]]], progress: Callable[[int], None] | None = None
) -> MaskSurvey:
    """Read every (mask file, photo size) pair and collect how the set was read."""
    survey = MaskSurvey()
    for path, photo_size in pairs:
        try:
            survey.add(path, read_mask(path, photo_size), photo_size)
        except ImageLoadError as exc:
            survey.unreadable.append((str(path), exc.reason))
        if progress:
            progress(1)
    return survey


def _aspect_differs(stored: tuple[int, int], photo: tuple[int, int], tolerance: float = 0.02) -> bool:
    (w, h), (pw, ph) = stored, photo
    return abs((w / h) / (pw / ph) - 1.0) > tolerance


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:EXAMPLES_SHOWN])
    return shown + (", ..." if len(names) > EXAMPLES_SHOWN else "")
