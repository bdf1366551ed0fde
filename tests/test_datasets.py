"""Dataset adapters: safe image and mask reading, the folder + CSV importer, the biased benchmark."""

from __future__ import annotations

import csv
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from crowdpatch.datasets import (
    MASK_BACKGROUND,
    MASK_IGNORE,
    MASK_OBJECT,
    BenchmarkSpec,
    CutoutSource,
    DatasetError,
    ImageLoadError,
    generate_benchmark,
    image_size,
    load_folder_dataset,
    load_mask,
    load_rgb,
    plan_benchmark,
    render_scene,
)

# In a checkout the data sits at /work/shared/data; in CI the repo is cloned with shared/ beside it.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real test data not found at {DATA}")


def _noise_image(width: int = 48, height: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, **params: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **params)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny 1-bit PNG whose header claims ``width`` x ``height``: a bomb that costs nothing to write."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


# --- images ---------------------------------------------------------------------------------


def test_missing_zero_byte_and_non_image_files_raise_with_their_path_and_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    cases = {tmp_path / "missing.png": "file not found", empty: "empty file", text: "not an image"}
    for path, reason in cases.items():
        for read in (load_rgb, image_size, load_mask):
            with pytest.raises(ImageLoadError) as info:
                read(path)
            assert info.value.path == path
            assert reason in info.value.reason
            assert str(info.value) == f"{path}: {info.value.reason}"


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_truncated_file_passes_the_header_check_but_fails_the_full_decode(tmp_path: Path, fmt: str) -> None:
    whole = _save(tmp_path / f"whole.{fmt}", _noise_image())
    truncated = tmp_path / f"truncated.{fmt}"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert image_size(truncated) == (48, 32)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(truncated)


def test_corrupt_png_data_is_reported(tmp_path: Path) -> None:
    data = bytearray(_save(tmp_path / "a.png", _noise_image()).read_bytes())
    data[100:300] = bytes(200)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_rgb(corrupt)


@pytest.mark.parametrize("side", [7_000, 100_000])
def test_png_header_claiming_a_huge_size_is_refused_as_a_decompression_bomb(tmp_path: Path, side: int) -> None:
    # 7,000^2 is over our 40 MP limit but under Pillow's own; 100,000^2 trips Pillow's DecompressionBombError.
    bomb = _png_header_only(tmp_path / "bomb.png", side, side)
    for read in (load_rgb, image_size, load_mask):
        with pytest.raises(ImageLoadError, match="decompression bomb"):
            read(bomb)


def test_max_pixels_is_checked_from_the_header_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "a.png", _noise_image(100, 100))

    def refuse_to_decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)
    with pytest.raises(ImageLoadError, match="10000 pixels exceeds the limit of 5000"):
        load_rgb(path, max_pixels=5_000)


def test_exif_rotated_jpeg_comes_back_upright(tmp_path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    path = _save(tmp_path / "rotated.jpg", stored, exif=exif, quality=95)
    upright = load_rgb(path)
    assert upright.shape == (40, 20, 3)
    assert image_size(path) == (20, 40)
    assert upright[2, 10, 0] > 200 and upright[2, 10, 2] < 50  # the stored left (red) is now on top
    assert upright[-3, 10, 2] > 200 and upright[-3, 10, 0] < 50


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.fromarray(np.array([[0, 128, 255]], np.uint8)), "png", [[0, 0, 0], [128, 128, 128], [255, 255, 255]]),
        (
            Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)),
            "png",
            [[0, 0, 0], [128, 128, 128], [255, 255, 255]],
        ),
        (
            Image.fromarray(np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], np.uint8)),
            "png",
            [[255, 0, 0], [255, 255, 255], [127, 127, 127]],
        ),
        (Image.new("P", (3, 1), 0), "png", [[0, 0, 0]] * 3),
        (Image.new("CMYK", (3, 1), (0, 255, 255, 0)), "tiff", [[255, 0, 0]] * 3),
    ],
    ids=["grey", "grey-16-bit-scaled", "rgba-on-white", "palette", "cmyk"],
)
def test_every_mode_becomes_8_bit_rgb(tmp_path: Path, image: Image.Image, fmt: str, expected: list[list[int]]) -> None:
    path = tmp_path / f"image.{fmt}"
    image.save(path)
    rgb = load_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    np.testing.assert_allclose(rgb[0], expected, atol=1)


def test_image_load_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(ImageLoadError(Path("/x.png"), "empty file")))
    assert (error.path, error.reason, str(error)) == (Path("/x.png"), "empty file", "/x.png: empty file")


# --- masks ----------------------------------------------------------------------------------


def test_mask_128_is_ignore_above_127_is_object_and_the_rest_background(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.png", np.array([[0, 100, 127, 128, 129, 255]], np.uint8))
    expected = [MASK_BACKGROUND, MASK_BACKGROUND, MASK_BACKGROUND, MASK_IGNORE, MASK_OBJECT, MASK_OBJECT]
    assert load_mask(path).tolist() == [expected]


def test_zero_one_mask_counts_every_nonzero_pixel_as_object(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.png", np.array([[0, 1, 1, 0]], np.uint8))
    assert load_mask(path).tolist() == [[MASK_BACKGROUND, MASK_OBJECT, MASK_OBJECT, MASK_BACKGROUND]]


def test_rgb_mask_is_read_as_grey(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.png", np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8))
    assert load_mask(path).tolist() == [[MASK_BACKGROUND, MASK_OBJECT]]


def test_smaller_mask_is_resized_to_its_image_with_nearest_neighbour(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.png", np.array([[0, 255], [128, 0]], np.uint8))
    mask = load_mask(path, size=(4, 6))
    assert mask.shape == (6, 4)
    assert set(np.unique(mask).tolist()) == {MASK_BACKGROUND, MASK_OBJECT, MASK_IGNORE}
    assert mask[0, 3] == MASK_OBJECT and mask[5, 0] == MASK_IGNORE and mask[0, 0] == MASK_BACKGROUND


# --- folder + CSV ---------------------------------------------------------------------------


def test_folder_without_csv_lists_every_image_recursively_and_sorted(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for name in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.tiff"]:
        _save(images / name, _noise_image(8, 8))
    (images / "readme.txt").write_text("not an image")
    _save(images / "._a.jpg", _noise_image(8, 8))  # macOS metadata twin: hidden, skipped
    load = load_folder_dataset(images)
    assert [r.path.relative_to(images) for r in load.records] == [
        Path("a.JPG"),
        Path("b.png"),
        Path("sub/c.webp"),
        Path("sub/deeper/d.tiff"),
    ]
    assert all(
        r.label is None and r.split == "train" and r.mask_path is None and r.path.is_absolute() for r in load.records
    )
    assert load.problems == []


def test_truncated_png_is_reported_with_its_path_and_the_rest_loads(tmp_path: Path) -> None:
    images = tmp_path / "images"
    good = _save(images / "good.png", _noise_image())
    (images / "empty.png").write_bytes(b"")
    (images / "header_cut.png").write_bytes(good.read_bytes()[:20])
    load = load_folder_dataset(images)
    assert [r.path.name for r in load.records] == ["good.png"]
    assert {Path(p.source).name for p in load.problems} == {"empty.png", "header_cut.png"}
    assert all(str(images) in p.source for p in load.problems)


def test_csv_missing_a_required_column_raises_naming_the_file_and_the_columns(tmp_path: Path) -> None:
    _save(tmp_path / "images" / "a.png", _noise_image(8, 8))
    labels = _write_csv(tmp_path / "labels.csv", [["file", "class"], ["a.png", "cat"]])
    with pytest.raises(DatasetError, match=r"labels\.csv: missing required column\(s\) path, label"):
        load_folder_dataset(tmp_path / "images", labels)


def test_csv_bad_lines_are_reported_by_line_number_and_the_rest_loads(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for name in ["a.png", "b.png", "c.png", "d.png", "e.png"]:
        _save(images / name, _noise_image(8, 8))
    outside = _save(tmp_path / "elsewhere" / "f.png", _noise_image(8, 8))
    labels = _write_csv(
        tmp_path / "labels.csv",
        [
            ["path", "label", "split", "background", "place"],
            ["a.png", "cat", "train", "land", "x"],  # line 2
            ["missing.png", "cat", "train", "land", "x"],  # line 3
            ["b.png", " ", "val", "water", "x"],  # line 4
            ["c.png", "dog", "holdout", "water", "x"],  # line 5
            ["a.png", "cat", "train", "land", "x"],  # line 6: duplicate of line 2
            ["d.png", "dog"],  # line 7: too few fields
            [str(outside), "dog", "TEST", "water", "y"],  # line 8: absolute path, split case ignored
            ["e.png", "dog", "", "water", "z"],  # line 9: empty split means train
        ],
    )
    load = load_folder_dataset(images, labels)
    assert [(r.path.name, r.label, r.split, r.groups) for r in load.records] == [
        ("a.png", "cat", "train", {"background": "land", "place": "x"}),
        ("f.png", "dog", "test", {"background": "water", "place": "y"}),
        ("e.png", "dog", "train", {"background": "water", "place": "z"}),
    ]
    reasons = {p.source: p.reason for p in load.problems}
    assert set(reasons) == {f"labels.csv:{line}" for line in (3, 4, 5, 6, 7)}
    assert "file not found" in reasons["labels.csv:3"]
    assert reasons["labels.csv:4"] == "empty label"
    assert "split 'holdout'" in reasons["labels.csv:5"]
    assert "first listed on line 2" in reasons["labels.csv:6"]
    assert "2 fields, the header has 5" in reasons["labels.csv:7"]


def test_csv_line_with_an_unreadable_image_is_skipped_only_when_images_are_checked(tmp_path: Path) -> None:
    images = tmp_path / "images"
    _save(images / "a.png", _noise_image(8, 8))
    (images / "b.png").write_text("not a png")
    labels = _write_csv(tmp_path / "labels.csv", [["path", "label"], ["a.png", "cat"], ["b.png", "dog"]])
    checked = load_folder_dataset(images, labels)
    assert [r.path.name for r in checked.records] == ["a.png"]
    assert [str(p) for p in checked.problems] == ["labels.csv:3: image unreadable: not an image (unrecognized format)"]
    assert len(load_folder_dataset(images, labels, check_images=False).records) == 2


@pytest.mark.parametrize(
    "content",
    [bytes(range(256)) * 4, "path,label\nà.png,chat\n".encode("latin-1"), b""],
    ids=["binary-garbage", "latin-1", "empty"],
)
def test_unusable_csv_raises_dataset_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    _save(tmp_path / "images" / "a.png", _noise_image(8, 8))
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    with pytest.raises(DatasetError, match=r"labels\.csv"):
        load_folder_dataset(tmp_path / "images", labels)


def test_folder_with_no_usable_image_raises_no_images_found(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no images found in"):
        load_folder_dataset(tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no images found in .*broken.png: image unreadable: empty file"):
        load_folder_dataset(tmp_path / "images")


def test_masks_are_matched_by_stem_with_any_extension(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ["horse001.jpg", "horse002.jpg", "horse003.jpg", "sub/x.png"]:
        _save(images / name, _noise_image(8, 8))
    _save(masks / "horse001.png", np.zeros((4, 4), np.uint8))
    _save(masks / "horse002.jpg", np.zeros((4, 4), np.uint8))
    _save(masks / "horse002.png", np.zeros((4, 4), np.uint8))  # lossless wins over the JPEG twin
    _save(masks / "sub" / "x.bmp", np.zeros((4, 4), np.uint8))
    load = load_folder_dataset(images, masks_dir=masks)
    found = {r.path.name: r.mask_path.relative_to(masks) if r.mask_path else None for r in load.records}
    assert found == {
        "horse001.jpg": Path("horse001.png"),
        "horse002.jpg": Path("horse002.png"),
        "horse003.jpg": None,
        "x.png": Path("sub/x.bmp"),
    }
    assert load.problems == []


def test_image_with_an_unreadable_mask_is_reported(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save(images / "a.png", _noise_image(8, 8))
    _save(images / "b.png", _noise_image(8, 8))
    (masks / "a.png").parent.mkdir()
    (masks / "a.png").write_bytes(b"")
    load = load_folder_dataset(images, masks_dir=masks)
    assert [r.path.name for r in load.records] == ["b.png"]
    assert len(load.problems) == 1 and "empty file" in load.problems[0].reason


# --- built-in biased benchmark --------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    spec = BenchmarkSpec(n_images=12, size=32, seed=3)
    generate_benchmark(tmp_path / "a", spec)
    generate_benchmark(tmp_path / "b", spec)
    generate_benchmark(tmp_path / "c", BenchmarkSpec(n_images=12, size=32, seed=4))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 2 * 12 + 1
    assert a == b
    assert a.keys() == c.keys() and a != c


Benchmark = tuple[Path, list[dict[str, str]], list[int]]
"""labels.csv, its rows, and the progress calls made while writing it."""


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory: pytest.TempPathFactory) -> Benchmark:
    out = tmp_path_factory.mktemp("benchmark")
    calls: list[int] = []
    labels = generate_benchmark(out, BenchmarkSpec(n_images=200, agreement=0.9, seed=1), progress=calls.append)
    with labels.open(newline="") as handle:
        return labels, list(csv.DictReader(handle)), calls


def test_train_agreement_matches_the_spec_and_val_and_test_are_balanced(benchmark: Benchmark) -> None:
    _, rows, calls = benchmark
    assert calls == [1] * 200
    agrees = {("blob", "land"), ("star", "water")}
    train = [(r["label"], r["background"]) for r in rows if r["split"] == "train"]
    assert len(train) == 120
    assert sum(pair in agrees for pair in train) / len(train) == pytest.approx(0.9, abs=0.01)
    assert {label for label, _ in train} == {"blob", "star"}
    for split in ("val", "test"):
        groups = [(r["label"], r["background"]) for r in rows if r["split"] == split]
        assert len(groups) == 40
        assert {g: groups.count(g) for g in set(groups)} == {
            g: 10 for g in [*agrees, ("blob", "water"), ("star", "land")]
        }


def test_generated_benchmark_loads_back_with_a_binary_mask_per_image(benchmark: Benchmark) -> None:
    labels, _, _ = benchmark
    load = load_folder_dataset(labels.parent / "images", labels, masks_dir=labels.parent / "masks")
    assert len(load.records) == 200 and load.problems == []
    record = load.records[0]
    assert record.mask_path is not None and set(record.groups) == {"background"}
    mask = load_mask(record.mask_path)
    assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) == {MASK_BACKGROUND, MASK_OBJECT}
    assert set(np.unique(np.asarray(Image.open(record.mask_path))).tolist()) == {0, 255}
    assert load_rgb(record.path).shape == (64, 64, 3)


def test_plan_is_balanced_even_at_the_strongest_bias() -> None:
    plan = plan_benchmark(BenchmarkSpec(n_images=1000, agreement=1.0))
    train = [(c, b) for split, c, b in plan if split == "train"]
    assert set(train) == {(0, "land"), (1, "water")}
    assert [split for split, _, _ in plan] == ["train"] * 600 + ["val"] * 200 + ["test"] * 200


@pytest.mark.parametrize("class_index", [0, 1])
@pytest.mark.parametrize("background", ["land", "water"])
def test_mask_is_exactly_the_pixels_the_object_changed(class_index: int, background: str) -> None:
    spec = BenchmarkSpec(size=64, object_scale=(0.25, 0.45))
    for seed in range(5):
        scene = render_scene(class_index, background, spec, np.random.default_rng(seed))
        assert scene.image.shape == (64, 64, 3) and scene.mask.shape == (64, 64)
        np.testing.assert_array_equal(scene.image[~scene.mask], scene.background[~scene.mask])
        changed = np.any(scene.image != scene.background, axis=2)
        assert changed[scene.mask].mean() > 0.95
        rows, cols = np.flatnonzero(scene.mask.any(axis=1)), np.flatnonzero(scene.mask.any(axis=0))
        assert 0.15 * 64 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 0.45 * 64 + 1


def test_grey_objects_are_grey_on_a_coloured_background() -> None:
    scene = render_scene(1, "water", BenchmarkSpec(grey_objects=True), np.random.default_rng(0))
    pixels = scene.image[scene.mask].astype(int)
    assert np.all(pixels[:, 0] == pixels[:, 1]) and np.all(pixels[:, 1] == pixels[:, 2])
    assert np.any(scene.image[~scene.mask, 2] != scene.image[~scene.mask, 0])


def test_spec_needs_zero_or_two_cutout_sources(tmp_path: Path) -> None:
    source = CutoutSource("horse", tmp_path, tmp_path)
    with pytest.raises(ValueError, match="exactly 0 or 2"):
        BenchmarkSpec(cutouts=(source,))
    with pytest.raises(ValueError, match="exactly 0 or 2"):
        BenchmarkSpec(cutouts=(source, source, source))


def test_cutout_source_without_image_mask_pairs_is_refused(tmp_path: Path) -> None:
    full, empty = tmp_path / "full", tmp_path / "empty"
    _save(full / "images" / "a.png", _noise_image(8, 8))
    _save(full / "masks" / "a.png", np.full((8, 8), 255, np.uint8))
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    spec = BenchmarkSpec(
        n_images=4,
        cutouts=(
            CutoutSource("a", full / "images", full / "masks"),
            CutoutSource("b", empty / "images", empty / "masks"),
        ),
    )
    with pytest.raises(ValueError, match="'b': no image/mask pairs"):
        generate_benchmark(tmp_path / "out", spec)


@needs_data
def test_cutout_mode_pastes_real_horses_and_coco_objects(tmp_path: Path) -> None:
    spec = BenchmarkSpec(
        n_images=8,
        grey_objects=True,
        seed=2,
        cutouts=(
            CutoutSource("horse", DATA / "weizmann_horse" / "rgb", DATA / "weizmann_horse" / "figure_ground"),
            CutoutSource("coco", DATA / "coco_mval_subset" / "img", DATA / "coco_mval_subset" / "gt"),
        ),
    )
    labels = generate_benchmark(tmp_path, spec)
    load = load_folder_dataset(tmp_path / "images", labels, masks_dir=tmp_path / "masks")
    assert len(load.records) == 8
    assert {r.label for r in load.records} == {"horse", "coco"}
    for record in load.records:
        image, mask = load_rgb(record.path), load_mask(record.mask_path) == MASK_OBJECT
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 0.45 * 64 + 1
        object_pixels = image[mask].astype(int)
        assert np.all(object_pixels[:, 0] == object_pixels[:, 2])
    assert generate_benchmark(tmp_path / "again", spec).read_bytes() == labels.read_bytes()
    assert _files(tmp_path / "again") == {k: v for k, v in _files(tmp_path).items() if not k.startswith("again")}


@needs_data
def test_real_grabcut_folder_loads_50_images_each_with_a_mask() -> None:
    load = load_folder_dataset(DATA / "grabcut" / "images", masks_dir=DATA / "grabcut" / "masks")
    assert len(load.records) == 50 and load.problems == []
    assert all(r.mask_path is not None for r in load.records)
    for record in load.records[:5]:
        assert set(np.unique(load_mask(record.mask_path)).tolist()) <= {MASK_BACKGROUND, MASK_OBJECT, MASK_IGNORE}
    with_band = load_mask(DATA / "grabcut" / "masks" / "124080.png")  # one of the masks with GrabCut's unlabeled band
    assert set(np.unique(with_band).tolist()) == {MASK_BACKGROUND, MASK_OBJECT, MASK_IGNORE}


@needs_data
def test_real_weizmann_mask_is_resized_to_its_photo() -> None:
    photo = DATA / "weizmann_horse" / "rgb" / "horse001.jpg"
    width, height = image_size(photo)
    mask = load_mask(DATA / "weizmann_horse" / "figure_ground" / "horse001.jpg", size=(width, height))
    assert mask.shape == (height, width) == load_rgb(photo).shape[:2]
    assert set(np.unique(mask).tolist()) <= {MASK_BACKGROUND, MASK_OBJECT, MASK_IGNORE}
    assert 0.05 < (mask == MASK_OBJECT).mean() < 0.95
