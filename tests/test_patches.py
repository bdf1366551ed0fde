"""Step-2 geometry: the overlapping window lattice, grid cells, and how window answers become a mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crowdpatch.boxes import Box
from crowdpatch.patches import (
    WindowKey,
    binarize,
    can_subdivide,
    children,
    first_level,
    grid_cells,
    positions,
    rasterize_cells,
    rasterize_windows,
    window_box,
)

GEOMETRY = settings(max_examples=100, deadline=None)


@st.composite
def regions(draw, min_side: int = 4, max_image: int = 300):
    """An image size (width, height) and a region inside it."""
    width = draw(st.integers(min_side, max_image))
    height = draw(st.integers(min_side, max_image))
    region_width = draw(st.integers(min_side, width))
    region_height = draw(st.integers(min_side, height))
    x0 = draw(st.integers(0, width - region_width))
    y0 = draw(st.integers(0, height - region_height))
    return (width, height), Box(x0, y0, x0 + region_width, y0 + region_height)


def deepest_level(region: Box, nominal_side: float = 2) -> int:
    """The deepest level whose windows are still ``nominal_side`` pixels wide (level 1 at least)."""
    return max(1, int(math.log2(min(region.width, region.height) / nominal_side)))


@st.composite
def keys_in(draw, region: Box, nominal_side: float = 2):
    level = draw(st.integers(1, deepest_level(region, nominal_side)))
    last = positions(level) - 1
    return WindowKey(level, draw(st.integers(0, last)), draw(st.integers(0, last)))


def paint(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """How many of ``boxes`` cover each pixel of an image of ``shape`` (height, width)."""
    count = np.zeros(shape, dtype=np.int32)
    for box in boxes:
        count[box.y0 : box.y1, box.x0 : box.x1] += 1
    return count


def box_pixels(box: Box, shape: tuple[int, int]) -> np.ndarray:
    return paint([box], shape) > 0


# -- the lattice -----------------------------------------------------------------------------------


@GEOMETRY
@given(data=st.data(), sized=regions())
def test_every_window_lies_inside_its_region_and_the_image(data, sized) -> None:
    (width, height), region = sized
    key = data.draw(keys_in(region))
    box = window_box(region, key)
    assert region.contains(box)
    assert Box.whole(width, height).contains(box)


@GEOMETRY
@given(sized=regions(min_side=2))
def test_level_one_windows_cover_every_pixel_of_the_region(sized) -> None:
    (width, height), region = sized
    keys = first_level()
    assert len(set(keys)) == 9
    count = paint([window_box(region, key) for key in keys], (height, width))
    inside = box_pixels(region, (height, width))
    assert (count[inside] >= 1).all()
    assert (count[~inside] == 0).all()


@GEOMETRY
@given(sized=regions())
def test_level_one_windows_are_half_the_region_at_quarter_strides(sized) -> None:
    _, region = sized
    for key in first_level():
        box = window_box(region, key)
        assert abs(box.width - region.width / 2) <= 1
        assert abs(box.height - region.height / 2) <= 1
        assert abs(box.x0 - (region.x0 + key.ix * region.width / 4)) <= 0.5
        assert abs(box.y0 - (region.y0 + key.iy * region.height / 4)) <= 0.5


@GEOMETRY
@given(data=st.data(), sized=regions(min_side=8))
def test_children_cover_exactly_their_parent(data, sized) -> None:
    (width, height), region = sized
    parent = data.draw(keys_in(region, nominal_side=4))
    assert can_subdivide(region, parent, max_depth=parent.level + 1, min_side=2)
    parent_box = window_box(region, parent)
    kids = children(parent)
    assert len(set(kids)) == 9
    assert all(kid.level == parent.level + 1 for kid in kids)
    kid_boxes = [window_box(region, kid) for kid in kids]
    assert all(parent_box.contains(box) for box in kid_boxes)
    union = paint(kid_boxes, (height, width)) > 0
    np.testing.assert_array_equal(union, box_pixels(parent_box, (height, width)))


@GEOMETRY
@given(
    data=st.data(),
    sized=regions(min_side=16),
    offset=st.sampled_from([(1, 0), (0, 1), (1, 1), (1, -1)]),
)
def test_neighbouring_parents_share_children_by_key_and_pixels(data, sized, offset) -> None:
    _, region = sized
    first = data.draw(keys_in(region, nominal_side=4))
    dx, dy = offset
    ix, iy = first.ix + dx, first.iy + dy
    last = positions(first.level) - 1
    assume(0 <= ix <= last and 0 <= iy <= last)
    second = WindowKey(first.level, ix, iy)

    shared = set(children(first)) & set(children(second))
    # Side neighbours share a row (or column) of three children; diagonal ones a single corner child.
    assert len(shared) == (1 if dx and dy else 3)
    first_boxes = {kid: window_box(region, kid) for kid in children(first)}
    second_boxes = {kid: window_box(region, kid) for kid in children(second)}
    a, b = window_box(region, first), window_box(region, second)
    for kid in shared:
        assert first_boxes[kid] == second_boxes[kid]
        assert a.contains(first_boxes[kid]) and b.contains(first_boxes[kid])


def test_the_shared_children_of_two_yes_parents_are_asked_once() -> None:
    asked = set(children(WindowKey(1, 0, 0))) | set(children(WindowKey(1, 1, 0)))
    assert len(asked) == 9 + 9 - 3


@settings(max_examples=40, deadline=None)
@given(
    sized=regions(min_side=4, max_image=260),
    max_depth=st.integers(1, 5),
    min_side=st.integers(2, 24),
)
def test_subdividing_every_yes_window_stops_and_respects_min_side(sized, max_depth, min_side) -> None:
    _, region = sized
    asked: set[WindowKey] = set()
    frontier = set(first_level())
    # Every window answered "yes" is the worst case: the most subdivision there can be.
    for _ in range(max_depth + 1):
        asked |= frontier
        frontier = {
            kid for key in frontier if can_subdivide(region, key, max_depth, min_side) for kid in children(key)
        } - asked
    assert not frontier
    assert max(key.level for key in asked) <= max_depth
    for key in asked:
        if key.level > 1:
            box = window_box(region, key)
            assert min(box.width, box.height) >= min_side, (key, box)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), sized=regions(min_side=4, max_image=2000), min_side=st.integers(2, 40))
def test_subdivision_stops_at_min_side_even_without_a_depth_limit(data, sized, min_side) -> None:
    _, region = sized
    key = data.draw(st.sampled_from(first_level()))
    for _ in range(64):
        if not can_subdivide(region, key, max_depth=1000, min_side=min_side):
            break
        key = data.draw(st.sampled_from(children(key)))
    else:
        pytest.fail("subdivision never stopped")
    # Where it stopped, some child (as rounded to pixels) would be narrower than min_side.
    assert any(min(window_box(region, c).width, window_box(region, c).height) < min_side for c in children(key))


def test_subdivision_stops_at_max_depth() -> None:
    region = Box(0, 0, 4096, 4096)
    assert can_subdivide(region, WindowKey(1, 0, 0), max_depth=2, min_side=2)
    assert not can_subdivide(region, WindowKey(2, 0, 0), max_depth=2, min_side=2)


def test_a_parent_whose_rounded_children_would_be_too_narrow_is_not_subdivided() -> None:
    # 12 px at level 2 is 3 px ideally, but rounding half-to-even makes window (2, 1, 0) [2, 4).
    region = Box(0, 0, 12, 12)
    parent = WindowKey(1, 0, 0)
    assert not can_subdivide(region, parent, max_depth=2, min_side=3)
    assert can_subdivide(region, parent, max_depth=2, min_side=2)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_positions_counts_the_windows_per_side_at_half_window_stride(level: int) -> None:
    count = positions(level)
    assert count == 2 ** (level + 1) - 1
    region = Box(10, 20, 10 + 2**10, 20 + 2**10)
    starts = [window_box(region, WindowKey(level, ix, 0)).x0 for ix in range(count)]
    side = region.width // 2**level
    assert starts == [region.x0 + ix * side // 2 for ix in range(count)]
    assert window_box(region, WindowKey(level, count - 1, count - 1)).x1 == region.x1
    assert window_box(region, WindowKey(level, count - 1, count - 1)).y1 == region.y1
    # The children of a whole level are exactly the next level.
    every_child = {kid for ix in range(count) for iy in range(count) for kid in children(WindowKey(level, ix, iy))}
    assert every_child == {
        WindowKey(level + 1, ix, iy) for ix in range(positions(level + 1)) for iy in range(positions(level + 1))
    }


# -- grid cells -------------------------------------------------------------------------------------


@GEOMETRY
@given(data=st.data(), sized=regions(min_side=1))
def test_grid_cells_tile_the_region_exactly_without_overlap(data, sized) -> None:
    (width, height), region = sized
    size = data.draw(st.integers(1, min(16, region.width, region.height)))
    cells = grid_cells(region, size)
    assert len(cells) == size * size
    count = paint(cells, (height, width))
    inside = box_pixels(region, (height, width))
    assert (count[inside] == 1).all()
    assert (count[~inside] == 0).all()
    # Row-major: cell index = row * size + col.
    for row in range(size):
        for col in range(size):
            cell = cells[row * size + col]
            if col:
                assert cell.x0 == cells[row * size + col - 1].x1 and cell.y0 == cells[row * size + col - 1].y0
            if row:
                assert cell.y0 == cells[(row - 1) * size + col].y1 and cell.x0 == cells[(row - 1) * size + col].x0


def test_grid_larger_than_the_region_is_refused() -> None:
    with pytest.raises(ValueError):
        grid_cells(Box(0, 0, 7, 100), 8)


# -- window keys ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(data=st.data(), level=st.integers(1, 12))
def test_window_key_text_round_trips(data, level: int) -> None:
    last = positions(level) - 1
    key = WindowKey(level, data.draw(st.integers(0, last)), data.draw(st.integers(0, last)))
    assert WindowKey.parse(str(key)) == key
    assert str(key) == f"{key.level}:{key.ix}:{key.iy}"


@pytest.mark.parametrize(
    "level, ix, iy", [(0, 0, 0), (-1, 0, 0), (1, -1, 0), (1, 0, -1), (1, 3, 0), (1, 0, 3), (2, 7, 0)]
)
def test_window_key_outside_its_lattice_is_refused(level: int, ix: int, iy: int) -> None:
    with pytest.raises(ValueError):
        WindowKey(level, ix, iy)


@pytest.mark.parametrize("text", ["", "1", "1:2", "1:0:0:0", "a:b:c", "1:0:x", "1:3:0", "0:0:0", "1.0:0:0"])
def test_malformed_window_key_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        WindowKey.parse(text)


# -- rasterization ----------------------------------------------------------------------------------

REGION = Box(8, 4, 72, 68)
SHAPE = (80, 90)


def test_a_finer_no_window_inside_a_coarse_yes_window_is_background() -> None:
    coarse, fine = WindowKey(1, 0, 0), WindowKey(2, 1, 1)
    soft = rasterize_windows(REGION, {coarse: 1.0, fine: 0.0}, SHAPE)
    fine_pixels = box_pixels(window_box(REGION, fine), SHAPE)
    coarse_pixels = box_pixels(window_box(REGION, coarse), SHAPE)
    assert (soft[fine_pixels] == 0).all()
    assert (soft[coarse_pixels & ~fine_pixels] == 1).all()
    assert (soft[~coarse_pixels] == 0).all()


@pytest.mark.parametrize("combine, overlap_value", [("min", 0.0), ("mean", 0.5)])
def test_overlapping_yes_and_no_windows_at_the_finest_level(combine: str, overlap_value: float) -> None:
    yes, no = WindowKey(2, 2, 2), WindowKey(2, 3, 2)
    soft = rasterize_windows(REGION, {WindowKey(1, 1, 1): 1.0, yes: 1.0, no: 0.0}, SHAPE, combine=combine)
    yes_pixels = box_pixels(window_box(REGION, yes), SHAPE)
    no_pixels = box_pixels(window_box(REGION, no), SHAPE)
    assert (yes_pixels & no_pixels).any()
    assert np.allclose(soft[yes_pixels & no_pixels], overlap_value)
    assert (soft[yes_pixels & ~no_pixels] == 1).all()
    assert (soft[no_pixels & ~yes_pixels] == 0).all()


@st.composite
def window_posteriors(draw):
    (width, height), region = draw(regions(min_side=16, max_image=120))
    keys = draw(st.lists(keys_in(region), min_size=0, max_size=25, unique=True))
    values = draw(st.lists(st.floats(0, 1), min_size=len(keys), max_size=len(keys)))
    return (height, width), region, dict(zip(keys, values))


@settings(max_examples=60, deadline=None)
@given(case=window_posteriors())
def test_soft_masks_stay_in_unit_range_and_are_zero_outside_the_region(case) -> None:
    shape, region, posteriors = case
    outside = ~box_pixels(region, shape)
    masks = {combine: rasterize_windows(region, posteriors, shape, combine=combine) for combine in ("min", "mean")}
    for soft in masks.values():
        assert soft.shape == shape and soft.dtype == np.float32
        assert (soft >= 0).all() and (soft <= 1).all()
        assert (soft[outside] == 0).all()
        unasked = paint([window_box(region, key) for key in posteriors], shape) == 0
        assert (soft[unasked] == 0).all()
    # Agreement is stricter than averaging over the same finest windows.
    assert (masks["min"] <= masks["mean"] + 1e-6).all()


def test_grid_cells_rasterize_to_their_own_posterior() -> None:
    cells = grid_cells(REGION, 4)
    values = [i / 15 for i in range(16)]
    soft = rasterize_cells(cells, values, SHAPE)
    for cell, value in zip(cells, values):
        assert np.allclose(soft[cell.y0 : cell.y1, cell.x0 : cell.x1], value)
    assert (soft[~box_pixels(REGION, SHAPE)] == 0).all()
    with pytest.raises(ValueError):
        rasterize_cells(cells, values[:-1], SHAPE)


def test_binarize_keeps_pixels_reaching_the_threshold() -> None:
    soft = np.array([[0.0, 0.49, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(binarize(soft), [[False, False, True, True]])
    np.testing.assert_array_equal(binarize(soft, 0.3), [[False, True, True, True]])
