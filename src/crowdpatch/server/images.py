"""What a worker sees of an image, drawn at the size it is shown at.

The worker page says how wide it shows a picture (CSS pixels) and its screen's pixel ratio; the
picture is cut from the original photo and resampled once, here, to exactly that many device
pixels, and its outlines are drawn at that resolution: a few CSS pixels thick, yellow on a dark
halo, so they show on foliage as on sky. A task picture is a JPEG (a photo as PNG is ten times
larger) without chroma subsampling, which would bleed the yellow lines.

Images are looked up by task id in the store, never by a path a client gives. Pictures are drawn
from the photos of :mod:`photos` (scaled once to the widest picture a task shows, bounded in
memory by bytes), and the pictures drawn lately are kept within a byte budget too
(:class:`TaskPictures`): a question is shown to several workers, and again after an undo.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Hashable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crowdpatch.boxes import Box
from crowdpatch.server.byte_cache import ByteLRU
from crowdpatch.server.photos import SCALED_SIDE_PX, Photo, PhotoStore

OUTLINE = (255, 214, 0)
HALO = (0, 0, 0)
OUTLINE_CSS_PX = 4.0
"""Width of a region outline or window box on screen; the halo adds HALO_CSS_PX on each side."""
HALO_CSS_PX = 2.0
THUMBNAIL_OUTLINE_CSS_PX = 2.0

MIN_VIEW_SOURCE_PX = 240
"""A patch or grid region smaller than this (photo pixels, per side) is shown in its surroundings, dimmed,
so the worker sees where it is and the picture is not a few pixels blown up to the page's width."""
GRID_VIEW_GROWTH = 1.5
SURROUNDINGS_BRIGHTNESS = 0.5

MAIN_CSS_PX = 800
"""Width a task picture is drawn at when the client does not say (API clients)."""
CONTEXT_CSS_PX = 200
MAX_DEVICE_PX = SCALED_SIDE_PX
"""Widest picture drawn, whatever the client asks: bounds the work one request can cause."""
JPEG_QUALITY = 90


Source = Image.Image | Photo
"""What a picture is drawn from: a photo as the server keeps it, or an image (the examples on the worker page)."""


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def device_width(css_px: float, dpr: float) -> int:
    return max(16, min(MAX_DEVICE_PX, round(css_px * dpr)))


def resampled(image: Source, box: Box, width: int) -> Image.Image:
    """``box`` of ``image`` at ``width`` pixels wide (its aspect ratio kept): Lanczos down, bicubic up.

    ``box`` counts pixels of the original photo; a scaled photo's pixels are addressed at its scale.
    """
    height = max(1, round(width * box.height / box.width))
    pixels, scale = (image.pixels, image.scale) if isinstance(image, Photo) else (image, 1.0)
    resample = Image.LANCZOS if width <= box.width * scale else Image.BICUBIC
    return pixels.resize(
        (width, height), resample, box=(box.x0 * scale, box.y0 * scale, box.x1 * scale, box.y1 * scale)
    )


def stroke(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], width: float) -> None:
    """A closed line, yellow on a dark halo that follows it (rounded joints, so corners stay whole)."""
    closed = points + [points[0]]
    halo = round(width + 2 * width * HALO_CSS_PX / OUTLINE_CSS_PX)
    draw.line(closed, fill=HALO, width=max(1, halo), joint="curve")
    draw.line(closed, fill=OUTLINE, width=max(1, round(width)), joint="curve")


def box_points(box: Box, scale: float, inset: float) -> list[tuple[float, float]]:
    """A box's corners at ``scale``, pulled in by ``inset`` so a line drawn on them stays inside the picture."""
    x0, y0 = box.x0 * scale + inset, box.y0 * scale + inset
    x1, y1 = box.x1 * scale - 1 - inset, box.y1 * scale - 1 - inset
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def whole_box(image: Source) -> Box:
    return Box.whole(image.width, image.height)


def view_box(shown_kind: str, box: Box, width: int, height: int) -> Box:
    """The part of an image a task's picture shows: the whole image for a verification, a polygon or extreme points;
    a pick's or a correction's own box (the extreme points' padded box, where the outlines are drawn); for a patch
    or a grid, its box, grown towards MIN_VIEW_SOURCE_PX a side (centred, inside the image) when smaller. A grid's
    region grows to at most GRID_VIEW_GROWTH times its side: its cells stay large enough to tap."""
    if shown_kind in ("verify", "polygon", "extreme"):
        return Box.whole(width, height)
    if shown_kind in ("pick", "correct"):
        return Box(max(0, box.x0), max(0, box.y0), min(width, box.x1), min(height, box.y1))

    def span(low: int, high: int, limit: int) -> tuple[int, int]:
        wanted = (
            MIN_VIEW_SOURCE_PX
            if shown_kind != "grid"
            else min(MIN_VIEW_SOURCE_PX, round((high - low) * GRID_VIEW_GROWTH))
        )
        size = min(max(high - low, wanted), limit)
        start = max(0, min(low - (size - (high - low)) // 2, limit - size))
        return start, start + size

    (x0, x1), (y0, y1) = span(box.x0, box.x1, width), span(box.y0, box.y1, height)
    return Box(x0, y0, x1, y1)


def render_patch(image: Source, box: Box, view: Box, width: int, dpr: float) -> Image.Image:
    """A patch (or grid region) in the view around it: the surroundings dimmed, the box outlined just outside its edge.

    The page draws a grid's cells and lines over the box.
    """
    shown = resampled(image, view, width)
    if view == box:
        return shown
    scale = width / view.width
    inner = [
        (box.x0 - view.x0) * scale,
        (box.y0 - view.y0) * scale,
        (box.x1 - view.x0) * scale,
        (box.y1 - view.y0) * scale,
    ]
    lit = Image.new("L", shown.size, 0)
    ImageDraw.Draw(lit).rectangle(
        [round(inner[0]), round(inner[1]), round(inner[2]) - 1, round(inner[3]) - 1], fill=255
    )
    shown = Image.composite(shown, Image.eval(shown, lambda v: int(v * SURROUNDINGS_BRIGHTNESS)), lit)
    line = OUTLINE_CSS_PX * dpr
    reach = line * (0.5 + HALO_CSS_PX / OUTLINE_CSS_PX)  # the halo's outer edge from the line's middle
    x0, y0, x1, y1 = inner[0] - reach, inner[1] - reach, inner[2] - 1 + reach, inner[3] - 1 + reach
    stroke(ImageDraw.Draw(shown), [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], line)
    return shown


def render_context(image: Source, box: Box, width: int, dpr: float) -> Image.Image:
    """The whole image, small, with the patch's place boxed."""
    shown = resampled(image, whole_box(image), width)
    line = THUMBNAIL_OUTLINE_CSS_PX * dpr
    halo = line * (1 + 2 * HALO_CSS_PX / OUTLINE_CSS_PX)
    stroke(ImageDraw.Draw(shown), box_points(box, width / image.width, halo / 2), line)
    return shown


def draw_outlines(shown: Image.Image, view: Box, outlines: list[list[list[int]]], dpr: float) -> int:
    """Outlines (image pixels) drawn over ``shown``, the picture of ``view``; how many had enough points to draw."""
    scale = shown.width / view.width
    draw = ImageDraw.Draw(shown)
    drawable = [outline for outline in outlines if outline and len(outline) >= 3]
    for outline in drawable:
        points = [((x - view.x0 + 0.5) * scale, (y - view.y0 + 0.5) * scale) for x, y in outline]
        stroke(draw, points, OUTLINE_CSS_PX * dpr)
    return len(drawable)


def render_outlined(image: Source, box: Box, outlines: list[list[list[int]]], width: int, dpr: float) -> Image.Image:
    """The whole image with a cluster (or a saliency mask) outlined: its contours when known, else its box."""
    shown = resampled(image, whole_box(image), width)
    if not draw_outlines(shown, whole_box(image), outlines, dpr):
        line = OUTLINE_CSS_PX * dpr
        halo = line * (1 + 2 * HALO_CSS_PX / OUTLINE_CSS_PX)
        stroke(ImageDraw.Draw(shown), box_points(box, width / image.width, halo / 2), line)
    return shown


def render_choice(image: Source, view: Box, outlines: list[list[list[int]]], width: int, dpr: float) -> Image.Image:
    """One outline a pick offers, over its view box: drawn like an outline check's; an empty one says so in words
    (a picture without a line would read as a picture whose outline failed to load)."""
    shown = resampled(image, view, width)
    if not draw_outlines(shown, view, outlines, dpr):
        label(shown, NO_OUTLINE, dpr)
    return shown


NO_OUTLINE = "No outline"
LABEL_CSS_PX = 16


def label(shown: Image.Image, text: str, dpr: float) -> None:
    """``text`` in white on a dark rounded box in the middle of the picture."""
    try:
        font = ImageFont.load_default(size=LABEL_CSS_PX * dpr)
    except TypeError:  # Pillow before 10.1: one small bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(shown)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = 8 * dpr
    left = (shown.width - (x1 - x0)) / 2 - x0
    top = (shown.height - (y1 - y0)) / 2 - y0
    box = (left + x0 - pad, top + y0 - pad, left + x1 + pad, top + y1 + pad)
    draw.rounded_rectangle(box, radius=pad, fill=(20, 20, 20))
    draw.text((left, top), text, font=font, fill=(255, 255, 255))


RENDERED_CACHE_BYTES = 32 * 2**20
"""Task pictures kept per process, as JPEG bytes (~100 KB at 800 px, up to ~1 MB at 2400 px)."""

Outlines = tuple[tuple[tuple[int, int], ...], ...]


class TaskPictures:
    """The pictures of one project's tasks, drawn from its photos; the latest kept within ``budget`` bytes."""

    def __init__(self, photos: PhotoStore, budget: int = RENDERED_CACHE_BYTES):
        self.photos = photos
        self.kept: ByteLRU[bytes] = ByteLRU(budget)

    def _kept(self, key: Hashable, draw: Callable[[], Image.Image]) -> bytes:
        data = self.kept.get(key)
        if data is None:
            data = jpeg(draw())
            self.kept.put(key, data, len(data))
        return data

    def patch(self, path: str, box: Box, view: Box, css_px: float = MAIN_CSS_PX, dpr: float = 1.0) -> bytes:
        width = device_width(css_px, dpr)
        return self._kept(
            ("patch", path, box, view, width, dpr),
            lambda: render_patch(self.photos.photo(path), box, view, width, dpr),
        )

    def context(self, path: str, box: Box, css_px: float = CONTEXT_CSS_PX, dpr: float = 1.0) -> bytes:
        width = device_width(css_px, dpr)
        return self._kept(
            ("context", path, box, width, dpr), lambda: render_context(self.photos.photo(path), box, width, dpr)
        )

    def outlined(self, path: str, box: Box, outlines: Outlines, css_px: float = MAIN_CSS_PX, dpr: float = 1.0) -> bytes:
        return self._with_outlines("outlined", render_outlined, path, box, outlines, css_px, dpr)

    def whole(self, path: str, css_px: float = MAIN_CSS_PX, dpr: float = 1.0) -> bytes:
        """The whole image (polygon and extreme-point tasks); clients map clicks back to image pixels."""
        width = device_width(css_px, dpr)

        def draw() -> Image.Image:
            photo = self.photos.photo(path)
            return resampled(photo, whole_box(photo), width)

        return self._kept(("whole", path, width), draw)

    def choice(self, path: str, view: Box, outlines: Outlines, css_px: float = MAIN_CSS_PX, dpr: float = 1.0) -> bytes:
        """One outline of a pick over its view box (or the outline a correction asks about, over its view box)."""
        return self._with_outlines("choice", render_choice, path, view, outlines, css_px, dpr)

    def _with_outlines(
        self, name: str, render, path: str, box: Box, outlines: Outlines, css_px: float, dpr: float
    ) -> bytes:
        """A picture of ``box`` with ``outlines`` drawn by ``render``, kept under its own key."""
        width = device_width(css_px, dpr)
        polygons = [list(map(list, outline)) for outline in outlines]
        return self._kept(
            (name, path, box, outlines, width, dpr),
            lambda: render(self.photos.photo(path), box, polygons, width, dpr),
        )


def as_outlines(polygons: list[list[list[int]]]) -> Outlines:
    """Outlines as the (hashable) argument of :func:`outlined`."""
    return tuple(tuple((int(x), int(y)) for x, y in polygon) for polygon in polygons)


def mask_preview(image: Source, soft: np.ndarray, css_px: float, dpr: float = 1.0) -> bytes:
    """The photo at its aspect ratio, dimmed where the soft mask is low, the mask's 0.5 line outlined."""
    from crowdpatch.saliency.outline import outline_polygons

    width = device_width(css_px, dpr)
    shown = resampled(image, whole_box(image), width)
    mask = Image.fromarray((np.clip(soft, 0, 1) * 255).astype(np.uint8)).resize(shown.size, Image.BILINEAR)
    weight = 0.45 + 0.55 * (np.asarray(mask, dtype=np.float32)[..., None] / 255.0)
    shown = Image.fromarray((np.asarray(shown, dtype=np.float32) * weight).astype(np.uint8))
    draw = ImageDraw.Draw(shown)
    for outline in outline_polygons(np.asarray(mask) >= 128):
        stroke(draw, [(x + 0.5, y + 0.5) for x, y in outline], THUMBNAIL_OUTLINE_CSS_PX * dpr)
    return jpeg(shown)


def soft_mask_png(soft: np.ndarray) -> bytes:
    return png(Image.fromarray((np.clip(soft, 0, 1) * 255).astype(np.uint8)))
