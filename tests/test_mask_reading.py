"""Ground-truth masks are read the way datasets store them: one test per encoding, each from a real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crowdpatch.datasets import MASK_BACKGROUND, MASK_IGNORE, MASK_OBJECT, read_mask, survey_masks
from helpers.masks import voc_palette

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _object_square(size: int = 16, value: int = 1) -> np.ndarray:
    indices = np.zeros((size, size), np.uint8)
    indices[4:12, 4:12] = value
    return indices


def _palette_png(path: Path, indices: np.ndarray, palette: list[int]) -> Path:
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    image.save(path)
    assert Image.open(path).mode == "P"
    return path


def test_voc_palette_values_match_the_published_colour_map() -> None:
    palette = voc_palette()
    assert palette[3:6] == [128, 0, 0] and palette[3 * 255 : 3 * 256] == [224, 224, 192]


def test_davis_palette_mask_is_read_by_index_not_by_its_dark_colour(tmp_path: Path) -> None:
    # Index 1 is dark red: as grey it is 38, under any brightness threshold, so reading colours empties the mask.
    path = _palette_png(tmp_path / "00000.png", _object_square(), voc_palette())
    reading = read_mask(path)
    assert reading.encoding == "palette" and reading.objects == 1
    assert np.count_nonzero(reading.codes == MASK_OBJECT) == 64
    assert np.count_nonzero(reading.codes == MASK_BACKGROUND) == 16 * 16 - 64


def test_voc_palette_void_band_is_ignored_and_several_objects_are_their_union(tmp_path: Path) -> None:
    indices = np.zeros((20, 20), np.uint8)
    indices[2:8, 2:8] = 15  # person
    indices[10:18, 10:18] = 13  # horse
    indices[1, 1:9] = 255  # void border
    reading = read_mask(_palette_png(tmp_path / "2007_000032.png", indices, voc_palette()))
    assert reading.objects == 2
    assert np.count_nonzero(reading.codes == MASK_OBJECT) == 36 + 64
    assert np.count_nonzero(reading.codes == MASK_IGNORE) == 8


def test_palette_mask_of_only_0_and_255_without_voc_colours_is_binary(tmp_path: Path) -> None:
    grey_palette = [v for i in range(256) for v in (i, i, i)]
    reading = read_mask(_palette_png(tmp_path / "m.png", _object_square(value=255), grey_palette))
    assert np.count_nonzero(reading.codes == MASK_OBJECT) == 64 and not np.any(reading.codes == MASK_IGNORE)


def test_zero_one_png_marks_every_nonzero_pixel(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(_object_square(value=1), mode="L").save(path)
    reading = read_mask(path)
    assert reading.encoding == "0/1" and np.count_nonzero(reading.codes == MASK_OBJECT) == 64


def test_zero_255_png_with_grabcut_band_keeps_128_as_ignore(tmp_path: Path) -> None:
    values = _object_square(value=255)
    values[3, 3:13] = 128
    path = tmp_path / "m.png"
    Image.fromarray(values, mode="L").save(path)
    reading = read_mask(path)
    assert reading.encoding == "0/255"
    assert np.count_nonzero(reading.codes == MASK_OBJECT) == 64 and np.count_nonzero(reading.codes == MASK_IGNORE) == 10


def test_sixteen_bit_png_instance_ids_are_objects(tmp_path: Path) -> None:
    values = np.zeros((16, 16), np.uint16)
    values[2:6, 2:6] = 1
    values[8:14, 8:14] = 2
    path = tmp_path / "m.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    reading = read_mask(path)
    assert reading.encoding == "16-bit" and reading.objects == 2
    assert np.count_nonzero(reading.codes == MASK_OBJECT) == 16 + 36


def test_sixteen_bit_png_at_full_range_is_object(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(_object_square().astype(np.uint16) * 65535).save(path)
    assert np.count_nonzero(read_mask(path).codes == MASK_OBJECT) == 64


def test_rgb_coloured_mask_counts_any_non_black_colour(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[2:6, 2:6] = (128, 0, 0)
    rgb[8:14, 8:14] = (0, 128, 0)
    path = tmp_path / "m.png"
    Image.fromarray(rgb, mode="RGB").save(path)
    reading = read_mask(path)
    assert reading.encoding == "colour" and reading.objects == 2
    assert np.count_nonzero(reading.codes == MASK_OBJECT) == 16 + 36


def test_jpeg_noisy_masks_keep_their_object(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:64, :64]
    truth = (yy - 31) ** 2 + (xx - 33) ** 2 < 15**2
    grey = np.where(truth, 255, 0).astype(np.uint8)
    colour = np.zeros((64, 64, 3), np.uint8)
    colour[truth] = (128, 0, 0)
    for name, array in (("grey.jpg", grey), ("colour.jpg", colour)):
        path = tmp_path / name
        Image.fromarray(array).save(path, quality=70)
        noisy = np.asarray(Image.open(path))
        assert len(np.unique(noisy)) > 3, "the file must really carry JPEG noise"
        codes = read_mask(path).codes
        agreement = np.mean((codes == MASK_OBJECT) == truth)
        assert agreement > 0.98, name


@pytest.mark.skipif(not (SHARED / "grabcut").is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize(
    ("folder", "encoding"),
    [("grabcut/masks", "0/255"), ("weizmann_horse/figure_ground", "grey"), ("coco_mval_subset/gt", "0/255")],
)
def test_the_shared_real_sets_read_with_an_object_in_every_mask(folder: str, encoding: str) -> None:
    files = sorted((SHARED / folder).iterdir())[:20]
    survey = survey_masks((path, Image.open(path).size) for path in files)
    assert survey.with_object == len(files) and survey.encodings == {encoding: len(files)}
    assert survey.warnings() == []


def test_survey_describes_the_set_and_warns_when_most_truths_are_empty(tmp_path: Path) -> None:
    pairs = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.zeros((8, 8), np.uint8) if i else _object_square(8, 255)[:8, :8]).save(path)
        pairs.append((path, (8, 8)))
    survey = survey_masks(pairs)
    assert survey.description() == "5 masks: empty (4), 0/255 (1), objects in 1"
    (warning,) = survey.warnings()
    assert warning.startswith("most ground truths hold no object: 4 of 5 (1.png, 2.png, 3.png, ...)")


def test_survey_names_all_void_masks_and_other_aspect_ratios(tmp_path: Path) -> None:
    void = _palette_png(tmp_path / "void.png", np.full((8, 8), 255, np.uint8), voc_palette())
    wide = tmp_path / "wide.png"
    Image.fromarray(_object_square(16, 255)[:8, :]).save(wide)
    survey = survey_masks([(void, (8, 8)), (wide, (16, 16))])
    text = "\n".join(survey.warnings())
    assert "1 masks are all 'void' or ignore (void.png)" in text
    assert "wide.png (16 x 8 for a 16 x 16 photo)" in text
