"""Biased splits of public datasets (CelebA, COCO, Waterbirds) as the labels CSV `crowdpatch init` reads.

Each builder reads a dataset's published files and returns :class:`SplitRow` s: an image path
relative to the dataset's image folder, a label, a split and group columns. The training split
carries a shortcut (the target co-occurs with a bias attribute at a chosen rate); validation and
test are balanced over the (target, bias) groups, so worst-group accuracy there measures whether
a classifier learnt the shortcut. :func:`write_labels_csv` writes the rows in the format of
:func:`crowdpatch.datasets.folder.load_folder_dataset`.

Correlation is symmetric, as in the spurious-correlation literature: with correlation 0.95,
95 % of training positives have the bias attribute and 95 % of training negatives lack it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crowdpatch.datasets.folder import DatasetError

YES, NO = "yes", "no"


class BiasSplitError(DatasetError):
    """A dataset file that is missing or malformed, or a name that the dataset does not have."""


@dataclass(frozen=True)
class SplitRow:
    """One line of the labels CSV."""

    path: str
    """Relative to the dataset's image folder (what `crowdpatch init --images` is given)."""
    label: str
    split: str
    groups: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Candidate:
    """An image that may enter a split, with its target and bias values."""

    key: str
    target: bool
    bias: bool


# --- sampling (pure) ---------------------------------------------------------------------------


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def sample_correlated(
    candidates: Sequence[Candidate], correlation: float, rng: np.random.Generator, max_per_class: int | None = None
) -> list[Candidate]:
    """As many candidates per target class as allow a fraction ``correlation`` of them to have ``bias == target``.

    Each target class is sized independently (the dataset's class imbalance is kept), capped at
    ``max_per_class``; within a class the aligned and conflicting images are drawn at random.
    """
    _check_rate("correlation", correlation)
    chosen: list[Candidate] = []
    for target in (True, False):
        aligned = [c for c in candidates if c.target == target and c.bias == target]
        conflicting = [c for c in candidates if c.target == target and c.bias != target]
        limits = []
        if correlation > 0:
            limits.append(len(aligned) / correlation)
        if correlation < 1:
            limits.append(len(conflicting) / (1 - correlation))
        size = int(np.floor(min(limits) + 1e-9))
        if max_per_class is not None:
            size = min(size, max_per_class)
        n_aligned = min(round(correlation * size), len(aligned))
        n_conflicting = min(size - n_aligned, len(conflicting))
        chosen += _draw(aligned, n_aligned, rng) + _draw(conflicting, n_conflicting, rng)
    return chosen


def sample_balanced(
    candidates: Sequence[Candidate], rng: np.random.Generator, per_group: int | None = None
) -> list[Candidate]:
    """The same number of candidates from each of the four (target, bias) groups.

    That number is ``per_group`` when given, and never more than the smallest group holds.
    """
    groups = [[c for c in candidates if c.target == t and c.bias == b] for t in (True, False) for b in (True, False)]
    size = min(len(g) for g in groups)
    if per_group is not None:
        size = min(size, per_group)
    return [c for group in groups for c in _draw(group, size, rng)]


def _draw(pool: list[Candidate], n: int, rng: np.random.Generator) -> list[Candidate]:
    if n <= 0:
        return []
    picked = rng.choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(picked)]


def group_counts(rows: Iterable[SplitRow], group: str) -> dict[tuple[str, str, str], int]:
    """(split, label, group value) -> number of rows: what a user checks after building."""
    counts: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row.split, row.label, row.groups.get(group, ""))
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


# --- output ------------------------------------------------------------------------------------


def write_labels_csv(path: Path, rows: Sequence[SplitRow]) -> Path:
    """``path,label,split[,group columns]``: the labels CSV of `crowdpatch init --labels`."""
    group_columns = list(dict.fromkeys(name for row in rows for name in row.groups))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", *group_columns])
        for row in rows:
            writer.writerow([row.path, row.label, row.split, *(row.groups.get(name, "") for name in group_columns)])
    return path


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise BiasSplitError(f"{path}: {what} not found")
    return path


def _unknown_name(kind: str, name: str, valid: Iterable[str]) -> BiasSplitError:
    return BiasSplitError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")


# --- CelebA ------------------------------------------------------------------------------------

CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}


def read_celeba_attributes(path: Path) -> tuple[list[str], dict[str, dict[str, bool]]]:
    """``list_attr_celeba.txt``: the attribute names and, per image file name, each attribute's value."""
    path = _require_file(path, "CelebA attribute file (list_attr_celeba.txt)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2:
        raise BiasSplitError(f"{path}: expected the image count on line 1 and the attribute names on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise BiasSplitError(f"{path}:1: expected the image count, got {lines[0].strip()!r}") from None
    names = lines[1].split()
    values: dict[str, dict[str, bool]] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise BiasSplitError(
                f"{path}:{number}: {len(fields) - 1} values, expected {len(names)} (one per attribute)"
            )
        if any(v not in ("1", "-1") for v in fields[1:]):
            raise BiasSplitError(f"{path}:{number}: attribute values must be 1 or -1")
        values[fields[0]] = {name: v == "1" for name, v in zip(names, fields[1:])}
    if len(values) != count:
        raise BiasSplitError(f"{path}: line 1 announces {count} images, the file lists {len(values)}")
    return names, values


def read_celeba_partition(path: Path) -> dict[str, str]:
    """``list_eval_partition.txt``: image file name -> train | val | test."""
    path = _require_file(path, "CelebA partition file (list_eval_partition.txt)")
    partition: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in CELEBA_SPLITS:
            raise BiasSplitError(f"{path}:{number}: expected 'FILENAME 0|1|2', got {line.strip()!r}")
        partition[fields[0]] = CELEBA_SPLITS[fields[1]]
    return partition


def build_celeba(
    attributes_file: Path,
    partition_file: Path,
    target: str,
    bias: str,
    correlation: float = 0.95,
    seed: int = 0,
    max_train_per_class: int | None = None,
    max_eval_per_group: int | None = None,
) -> list[SplitRow]:
    """CelebA rows: label ``target`` / ``not_target``, group column ``bias`` (yes | no).

    Train comes from CelebA's train partition with the given correlation; val and test from its
    val and test partitions, balanced over the four (target, bias) groups.
    """
    names, values = read_celeba_attributes(attributes_file)
    for kind, name in (("target attribute", target), ("bias attribute", bias)):
        if name not in names:
            raise _unknown_name(kind, name, names)
    if target == bias:
        raise BiasSplitError(f"target and bias are the same attribute ({target})")
    partition = read_celeba_partition(partition_file)
    missing = [f for f in values if f not in partition]
    if missing:
        raise BiasSplitError(
            f"{partition_file}: {len(missing)} image(s) of the attribute file have no partition (first: {missing[0]})"
        )
    rng = np.random.default_rng(seed)
    by_split: dict[str, list[Candidate]] = {s: [] for s in CELEBA_SPLITS.values()}
    for filename, attrs in values.items():
        by_split[partition[filename]].append(Candidate(filename, attrs[target], attrs[bias]))
    chosen = {
        "train": sample_correlated(by_split["train"], correlation, rng, max_train_per_class),
        "val": sample_balanced(by_split["val"], rng, max_eval_per_group),
        "test": sample_balanced(by_split["test"], rng, max_eval_per_group),
    }
    return [
        SplitRow(c.key, target if c.target else f"not_{target}", split, {bias: YES if c.bias else NO})
        for split, candidates in chosen.items()
        for c in candidates
    ]


# --- COCO --------------------------------------------------------------------------------------


def load_coco(instances_file: Path):  # -> pycocotools.coco.COCO
    """A pycocotools COCO index, with its progress prints silenced and JSON errors naming the file."""
    from pycocotools.coco import COCO

    instances_file = _require_file(instances_file, "COCO instances JSON")
    try:
        dataset = json.loads(instances_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BiasSplitError(f"{instances_file}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset, dict) or key not in dataset:
            raise BiasSplitError(f"{instances_file}: not a COCO instances file (no {key!r} list)")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _category_id(coco, name: str, kind: str) -> int:
    by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    if name not in by_name:
        raise _unknown_name(kind, name, sorted(by_name))
    return by_name[name]


def build_coco(
    coco,
    target: str,
    context: str,
    correlation: float = 0.95,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_train_per_class: int | None = None,
) -> list[SplitRow]:
    """COCO rows: label ``target`` / ``no target``, group column ``context`` (yes | no).

    Val and test are drawn first, balanced: each takes ``fraction`` x the smallest
    (target, context) group from every group; train is then drawn from the remaining images with
    the given correlation.
    """
    _check_rate("val_fraction", val_fraction)
    _check_rate("test_fraction", test_fraction)
    if val_fraction + test_fraction > 1:
        raise ValueError("val_fraction + test_fraction must not exceed 1")
    target_id = _category_id(coco, target, "target category")
    context_id = _category_id(coco, context, "context category")
    if target_id == context_id:
        raise BiasSplitError(f"target and context are the same category ({target})")
    with_target = set(coco.getImgIds(catIds=[target_id]))
    with_context = set(coco.getImgIds(catIds=[context_id]))
    files = {img["id"]: img["file_name"] for img in coco.loadImgs(coco.getImgIds())}
    pool = [Candidate(str(i), i in with_target, i in with_context) for i in sorted(files)]
    rng = np.random.default_rng(seed)
    smallest = min(sum(1 for c in pool if c.target == t and c.bias == b) for t in (True, False) for b in (True, False))
    val = sample_balanced(pool, rng, int(smallest * val_fraction))
    taken = {c.key for c in val}
    test = sample_balanced([c for c in pool if c.key not in taken], rng, int(smallest * test_fraction))
    taken |= {c.key for c in test}
    train = sample_correlated([c for c in pool if c.key not in taken], correlation, rng, max_train_per_class)
    return [
        SplitRow(files[int(c.key)], target if c.target else f"no {target}", split, {context: YES if c.bias else NO})
        for split, chosen in (("train", train), ("val", val), ("test", test))
        for c in chosen
    ]


def coco_target_mask(coco, image_id: int, category: str) -> np.ndarray:
    """The union of the category's instance masks in one image (bool, H x W)."""
    category_id = _category_id(coco, category, "category")
    image = coco.loadImgs([image_id])[0]
    union = np.zeros((image["height"], image["width"]), dtype=bool)
    for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], catIds=[category_id], iscrowd=None)):
        union |= coco.annToMask(annotation).astype(bool)
    return union


def write_coco_masks(coco, rows: Sequence[SplitRow], target: str, masks_dir: Path) -> int:
    """The target's mask (0 / 255 PNG) of every positive row, at ``masks_dir/<path without extension>.png``."""
    from crowdpatch.masks.export import write_binary_png

    ids = {img["file_name"]: img["id"] for img in coco.loadImgs(coco.getImgIds())}
    written = 0
    for row in rows:
        if row.label != target:
            continue
        destination = Path(masks_dir) / Path(row.path).with_suffix(".png")
        destination.parent.mkdir(parents=True, exist_ok=True)
        write_binary_png(destination, coco_target_mask(coco, ids[row.path], target))
        written += 1
    return written


# --- Waterbirds --------------------------------------------------------------------------------

WATERBIRDS_COLUMNS = ("img_id", "img_filename", "y", "split", "place")


def build_waterbirds(metadata_file: Path) -> list[SplitRow]:
    """Waterbirds rows from ``metadata.csv``.

    Label landbird | waterbird, group ``place`` (land | water), and the dataset's own splits.
    """
    metadata_file = _require_file(metadata_file, "Waterbirds metadata.csv")
    with metadata_file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in WATERBIRDS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BiasSplitError(
                f"{metadata_file}: missing column(s) {', '.join(missing)} "
                f"(header: {', '.join(reader.fieldnames or [])})"
            )
        rows = []
        for record in reader:
            line = reader.line_num
            y, split, place = record["y"], record["split"], record["place"]
            if (
                y not in ("0", "1")
                or place not in ("0", "1")
                or split not in CELEBA_SPLITS
                or not record["img_filename"]
            ):
                raise BiasSplitError(
                    f"{metadata_file}:{line}: expected y, place in 0|1, split in 0|1|2 and a file name, "
                    f"got y={y!r} split={split!r} place={place!r} img_filename={record['img_filename']!r}"
                )
            rows.append(
                SplitRow(
                    record["img_filename"],
                    "waterbird" if y == "1" else "landbird",
                    CELEBA_SPLITS[split],
                    {"place": "water" if place == "1" else "land"},
                )
            )
    return rows


def missing_images(images_dir: Path, rows: Sequence[SplitRow]) -> list[str]:
    """Rows whose image is not in ``images_dir`` (a wrong --images is the usual cause)."""
    return [row.path for row in rows if not os.path.isfile(Path(images_dir) / row.path)]
