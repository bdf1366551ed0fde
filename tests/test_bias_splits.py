"""Biased splits of CelebA, COCO and Waterbirds, from tiny fixtures in each dataset's published format."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crowdpatch.datasets import load_folder_dataset
from crowdpatch.datasets.bias_splits import (
    BiasSplitError,
    build_celeba,
    build_coco,
    build_waterbirds,
    load_coco,
    write_coco_masks,
    write_labels_csv,
)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
# (mustache, male) -> images per CelebA partition (0 train, 1 val, 2 test).
CELEBA_GROUPS = {
    (True, True): (40, 5, 4),
    (True, False): (10, 3, 6),
    (False, True): (30, 4, 5),
    (False, False): (60, 6, 7),
}


def _jpeg(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _celeba(root: Path) -> Path:
    """list_attr_celeba.txt, list_eval_partition.txt and img_align_celeba/ as CelebA publishes them."""
    rng = np.random.default_rng(1)
    attr_lines, partition_lines = [], []
    number = 0
    for (mustache, male), counts in CELEBA_GROUPS.items():
        for partition, count in enumerate(counts):
            for _ in range(count):
                number += 1
                name = f"{number:06d}.jpg"
                values = rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES))
                values[CELEBA_ATTRIBUTES.index("Mustache")] = 1 if mustache else -1
                values[CELEBA_ATTRIBUTES.index("Male")] = 1 if male else -1
                # CelebA pads each value to two characters: "000001.jpg -1  1  1 -1 ...".
                attr_lines.append(name + " " + " ".join(f"{v:>2d}" for v in values))
                partition_lines.append(f"{name} {partition}")
                _jpeg(root / "img_align_celeba" / name, number)
    (root / "list_attr_celeba.txt").write_text(
        f"{number}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(attr_lines) + "\n"
    )
    (root / "list_eval_partition.txt").write_text("\n".join(partition_lines) + "\n")
    return root


@pytest.fixture(scope="module")
def celeba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _celeba(tmp_path_factory.mktemp("celeba"))


def _celeba_rows(root: Path, **kwargs):
    return build_celeba(root / "list_attr_celeba.txt", root / "list_eval_partition.txt", "Mustache", "Male", **kwargs)


def _groups(rows, split: str, column: str) -> Counter:
    return Counter((r.label, r.groups[column]) for r in rows if r.split == split)


def test_celeba_train_has_the_chosen_correlation_in_each_class(celeba: Path) -> None:
    rows = _celeba_rows(celeba, correlation=0.8)
    train = _groups(rows, "train", "Male")
    # Positives: 40 aligned allow 50 at 0.8 and 10 conflicting allow 50; negatives: 60 aligned allow 75.
    assert train == {
        ("Mustache", "yes"): 40,
        ("Mustache", "no"): 10,
        ("not_Mustache", "no"): 60,
        ("not_Mustache", "yes"): 15,
    }


def test_celeba_val_and_test_are_balanced_over_the_four_groups(celeba: Path) -> None:
    rows = _celeba_rows(celeba, correlation=0.8)
    assert set(_groups(rows, "val", "Male").values()) == {3}
    assert len(_groups(rows, "val", "Male")) == 4
    assert set(_groups(rows, "test", "Male").values()) == {4}
    assert len(_groups(rows, "test", "Male")) == 4


def test_celeba_sampling_is_seeded(celeba: Path) -> None:
    assert _celeba_rows(celeba, seed=3) == _celeba_rows(celeba, seed=3)
    assert _celeba_rows(celeba, seed=3) != _celeba_rows(celeba, seed=4)


def test_celeba_labels_csv_loads_in_the_pipeline_with_group_and_split(celeba: Path, tmp_path: Path) -> None:
    rows = _celeba_rows(celeba, correlation=0.8)
    labels = write_labels_csv(tmp_path / "labels.csv", rows)
    with labels.open() as handle:
        assert next(csv.reader(handle)) == ["path", "label", "split", "Male"]
    load = load_folder_dataset(celeba / "img_align_celeba", labels)
    assert not load.problems
    assert len(load.records) == len(rows)
    assert Counter(r.split for r in load.records) == {"train": 125, "val": 12, "test": 16}
    assert {r.groups["Male"] for r in load.records} == {"yes", "no"}


def test_celeba_unknown_attribute_lists_the_valid_names(celeba: Path) -> None:
    with pytest.raises(
        BiasSplitError, match=r"unknown target attribute 'Moustache'; valid: 5_o_Clock_Shadow, .*Mustache"
    ):
        build_celeba(celeba / "list_attr_celeba.txt", celeba / "list_eval_partition.txt", "Moustache", "Male")


def test_celeba_malformed_line_names_file_and_line(celeba: Path, tmp_path: Path) -> None:
    lines = (celeba / "list_attr_celeba.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]
    bad = tmp_path / "list_attr_celeba.txt"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(BiasSplitError, match=r"list_attr_celeba.txt:5: 39 values, expected 40"):
        build_celeba(bad, celeba / "list_eval_partition.txt", "Mustache", "Male")
    (tmp_path / "partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(BiasSplitError, match=r"partition.txt:2: expected 'FILENAME 0\|1\|2'"):
        build_celeba(celeba / "list_attr_celeba.txt", tmp_path / "partition.txt", "Mustache", "Male")


def test_celeba_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BiasSplitError, match=r"nowhere/list_attr_celeba.txt: CelebA attribute file .* not found"):
        build_celeba(tmp_path / "nowhere" / "list_attr_celeba.txt", tmp_path / "p.txt", "Mustache", "Male")


def test_build_split_celeba_command_writes_labels_and_reports_groups(celeba: Path, tmp_path: Path, invoke) -> None:
    result = invoke(
        "build-split", "celeba", celeba, "--out", tmp_path / "out", "--correlation", "0.8", "--max-eval-per-group", "2"
    )
    assert result.exit_code == 0, result.stderr
    assert "val   Mustache / Male=no: 2" in result.stdout
    assert f"--images {celeba / 'img_align_celeba'}" in result.stdout
    assert (tmp_path / "out" / "labels.csv").is_file()
    bad = invoke("build-split", "celeba", celeba, "--out", tmp_path / "out", "--bias", "Beard")
    assert bad.exit_code == 1
    assert "unknown bias attribute 'Beard'; valid:" in bad.stderr


def test_build_split_help_names_the_three_sources(invoke) -> None:
    result = invoke("build-split", "--help")
    assert result.exit_code == 0
    for name in ("celeba", "coco", "waterbirds", "correlation"):
        assert name in result.stdout


# --- COCO -----------------------------------------------------------------------------------------

BALL, PERSON, DOG = 37, 1, 18


def _coco(root: Path) -> Path:
    """An instances JSON (+ images) with 8 ball+person, 2 ball alone, 3 person alone, 10 with a dog only."""
    images, annotations = [], []
    plan = [(True, True)] * 8 + [(True, False)] * 2 + [(False, True)] * 3 + [(False, False)] * 10

    def add(image_id: int, category: int, box: tuple[int, int, int, int]) -> None:
        x, y, w, h = box
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "iscrowd": 0,
                "bbox": [x, y, w, h],
                "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            }
        )

    for image_id, (ball, person) in enumerate(plan, start=1):
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": 20, "height": 10})
        _jpeg(root / "train2017" / name, image_id)
        if ball:
            add(image_id, BALL, (2, 2, 4, 4))
            add(image_id, BALL, (12, 4, 3, 3))
        if person:
            add(image_id, PERSON, (0, 0, 10, 10))
        if not ball and not person:
            add(image_id, DOG, (1, 1, 5, 5))
    categories = [
        {"id": PERSON, "name": "person", "supercategory": "person"},
        {"id": DOG, "name": "dog", "supercategory": "animal"},
        {"id": BALL, "name": "sports ball", "supercategory": "sports"},
    ]
    path = root / "instances_train2017.json"
    path.write_text(
        json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories})
    )
    return path


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _coco(tmp_path_factory.mktemp("coco"))


def test_coco_splits_balance_eval_and_correlate_train(coco_file: Path) -> None:
    rows = build_coco(
        load_coco(coco_file), "sports ball", "person", correlation=0.75, val_fraction=0.5, test_fraction=0.5
    )
    # The smallest group (ball alone) has 2: one per group to val, one to test.
    assert _groups(rows, "val", "person") == {
        (label, group): 1 for label in ("sports ball", "no sports ball") for group in ("yes", "no")
    }
    assert _groups(rows, "test", "person") == _groups(rows, "val", "person")
    # Left for train: ball+person 6, ball alone 0, person alone 1, neither 8.
    train = _groups(rows, "train", "person")
    assert train[("sports ball", "no")] == 0 and train[("sports ball", "yes")] == 0
    assert train == {("no sports ball", "no"): 3, ("no sports ball", "yes"): 1}
    assert len({r.path for r in rows}) == len(rows)


def test_coco_train_keeps_the_co_occurrence_rate(coco_file: Path) -> None:
    rows = build_coco(
        load_coco(coco_file), "sports ball", "person", correlation=0.8, val_fraction=0.0, test_fraction=0.0
    )
    train = _groups(rows, "train", "person")
    assert train == {
        ("sports ball", "yes"): 8,
        ("sports ball", "no"): 2,
        ("no sports ball", "no"): 10,
        ("no sports ball", "yes"): 2,
    }


def test_coco_masks_are_the_union_of_target_instances(coco_file: Path, tmp_path: Path) -> None:
    coco = load_coco(coco_file)
    rows = build_coco(coco, "sports ball", "person", correlation=0.8, val_fraction=0.0, test_fraction=0.0)
    assert write_coco_masks(coco, rows, "sports ball", tmp_path / "masks") == 10
    positive = next(r for r in rows if r.label == "sports ball")
    mask = np.asarray(Image.open(tmp_path / "masks" / Path(positive.path).with_suffix(".png")))
    assert set(np.unique(mask)) == {0, 255}
    assert mask[4, 4] == 255 and mask[5, 13] == 255  # inside each ball
    assert mask[0, 0] == 0 and mask[8, 9] == 0  # person only / background
    assert not any(
        (tmp_path / "masks" / Path(r.path).with_suffix(".png")).exists() for r in rows if r.label != "sports ball"
    )
    labels = write_labels_csv(tmp_path / "labels.csv", rows)
    load = load_folder_dataset(coco_file.parent / "train2017", labels, tmp_path / "masks")
    assert sum(r.mask_path is not None for r in load.records) == 10


def test_coco_unknown_category_and_bad_json_are_named(coco_file: Path, tmp_path: Path) -> None:
    with pytest.raises(BiasSplitError, match=r"unknown context category 'people'; valid: dog, person, sports ball"):
        build_coco(load_coco(coco_file), "sports ball", "people")
    bad = tmp_path / "instances.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(BiasSplitError, match=r"instances.json:2: not valid JSON"):
        load_coco(bad)


def test_build_split_coco_command_writes_masks(coco_file: Path, tmp_path: Path, invoke) -> None:
    out = tmp_path / "out"
    result = invoke(
        "build-split",
        "coco",
        coco_file,
        "--images",
        coco_file.parent / "train2017",
        "--out",
        out,
        "--val-fraction",
        "0.5",
        "--test-fraction",
        "0.5",
    )
    assert result.exit_code == 0, result.stderr
    assert len(list((out / "masks").glob("*.png"))) == 4  # the positives of val and test; train has none left
    assert f"--masks {out / 'masks'}" in result.stdout


# --- Waterbirds -----------------------------------------------------------------------------------


def test_waterbirds_keeps_its_splits_and_place_group(tmp_path: Path) -> None:
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i, (y, split, place) in enumerate([(1, 0, 1), (1, 0, 0), (0, 1, 0), (0, 2, 1)], start=1):
        name = f"001.Black_footed_Albatross/img_{i}.jpg"
        _jpeg(tmp_path / name, i)
        lines.append(f"{i},{name},{y},{split},{place},/o/ocean/00000001.jpg")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    rows = build_waterbirds(tmp_path / "metadata.csv")
    assert [(r.label, r.split, r.groups["place"]) for r in rows] == [
        ("waterbird", "train", "water"),
        ("waterbird", "train", "land"),
        ("landbird", "val", "land"),
        ("landbird", "test", "water"),
    ]
    labels = write_labels_csv(tmp_path / "out" / "labels.csv", rows)
    assert len(load_folder_dataset(tmp_path, labels).records) == 4


def test_waterbirds_malformed_line_and_missing_column_are_named(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("img_id,img_filename,y,split,place\n1,a.jpg,1,0,1\n2,b.jpg,2,0,1\n")
    with pytest.raises(BiasSplitError, match=r"metadata.csv:3: expected y, place in 0\|1"):
        build_waterbirds(tmp_path / "metadata.csv")
    (tmp_path / "metadata.csv").write_text("img_id,img_filename,y,split\n")
    with pytest.raises(BiasSplitError, match=r"missing column\(s\) place"):
        build_waterbirds(tmp_path / "metadata.csv")
