"""The generic dataset adapter: a folder of images, optionally a labels CSV and a masks folder.

A user's folder always holds a few bad files and a CSV always has a few bad lines. One bad line
must not cost the whole import, and every skipped line must be reported by its line number, so
loading returns the usable records *and* the list of problems. Only a file that is unusable as a
whole (a CSV without its required columns, not text, or a folder with no image) raises.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from crowdpatch.datasets.images import ImageLoadError, image_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("path", "label")
# When one stem has several mask files, a lossless format wins over a lossy one.
_MASK_PREFERENCE = (".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """A dataset input that cannot be used at all (as opposed to a few bad lines or files)."""


@dataclass(frozen=True)
class ImageRecord:
    """One usable image of a dataset."""

    path: Path
    """Absolute and normalised (``..`` removed, symlinks kept), so one listing is never two records."""
    label: str | None
    """Class label; None when the dataset has no labels (images only)."""
    split: str = "train"
    """train | val | test."""
    groups: dict[str, str] = field(default_factory=dict, hash=False)
    """Group attributes (every extra CSV column, e.g. background), for per-group metrics."""
    mask_path: Path | None = None
    """Ground-truth mask of the object, when the dataset has one for this image."""


@dataclass(frozen=True)
class InputProblem:
    """A file or CSV line that was skipped, and why."""

    source: str
    """The file path, or ``labels.csv:LINE``."""
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class DatasetLoad:
    """What a dataset import produced: the usable records and everything that was skipped."""

    records: list[ImageRecord]
    problems: list[InputProblem]


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files (e.g. macOS ``._x.jpg``) are skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if _is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _mask_key(path: Path, root: Path) -> Path:
    """The name an image and its mask share: the path under its folder, without extension."""
    try:
        return path.relative_to(root).with_suffix("")
    except ValueError:
        # An image listed by absolute path outside images_dir is matched by its stem alone.
        return Path(path.stem)


def _mask_index(masks_dir: Path) -> dict[Path, Path]:
    index: dict[Path, Path] = {}
    masks = sorted(_image_files(masks_dir), key=lambda p: _MASK_PREFERENCE.index(p.suffix.lower()))
    for mask in masks:
        index.setdefault(_mask_key(mask, masks_dir), mask)
    return index


def _check_readable(path: Path, what: str) -> str | None:
    try:
        image_size(path)
    except ImageLoadError as exc:
        return f"{what} unreadable: {exc.reason}"
    return None


def _read_csv(labels_csv: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) of every non-blank row; raises DatasetError for an unusable file."""
    if not labels_csv.is_file():
        raise DatasetError(f"{labels_csv}: labels file not found")
    try:
        with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{labels_csv}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DatasetError(f"{labels_csv}: malformed CSV: {exc}") from exc
    if header is None:
        raise DatasetError(f"{labels_csv}: empty file, expected a header with columns {', '.join(REQUIRED_COLUMNS)}")
    header = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise DatasetError(
            f"{labels_csv}: missing required column(s) {', '.join(missing)} (header: {', '.join(header)})"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DatasetError(f"{labels_csv}: duplicated column(s) {', '.join(duplicated)}")
    return header, rows


def _records_from_csv(
    images_dir: Path, labels_csv: Path, check_images: bool
) -> tuple[list[tuple[str, ImageRecord]], list[InputProblem]]:
    """(source, record) for every usable line, masks not yet attached, plus the skipped lines."""
    header, rows = _read_csv(labels_csv)
    group_columns = [name for name in header if name not in REQUIRED_COLUMNS and name != "split"]
    found: list[tuple[str, ImageRecord]] = []
    problems: list[InputProblem] = []
    first_line_of: dict[Path, int] = {}
    for line, row in rows:
        source = f"{labels_csv.name}:{line}"
        if len(row) != len(header):
            problems.append(InputProblem(source, f"{len(row)} fields, the header has {len(header)}"))
            continue
        values = {name: cell.strip() for name, cell in zip(header, row)}
        reasons: list[str] = []
        path: Path | None = None
        if not values["path"]:
            reasons.append("empty path")
        else:
            path = _absolute(images_dir / values["path"])
            if not path.exists():
                reasons.append(f"file not found: {path}")
            elif not path.is_file():
                reasons.append(f"not a file: {path}")
            elif path in first_line_of:
                reasons.append(f"duplicate path, first listed on line {first_line_of[path]}")
            else:
                first_line_of[path] = line
                if check_images:
                    unreadable = _check_readable(path, "image")
                    if unreadable:
                        reasons.append(unreadable)
        if not values["label"]:
            reasons.append("empty label")
        split = values.get("split", "").lower() or "train"
        if split not in SPLITS:
            reasons.append(f"split {values['split']!r} is not one of {', '.join(SPLITS)}")
        if reasons or path is None:
            problems.append(InputProblem(source, "; ".join(reasons)))
            continue
        groups = {name: values[name] for name in group_columns}
        found.append((source, ImageRecord(path=path, label=values["label"], split=split, groups=groups)))
    return found, problems


def _records_from_folder(
    images_dir: Path, check_images: bool
) -> tuple[list[tuple[str, ImageRecord]], list[InputProblem]]:
    found: list[tuple[str, ImageRecord]] = []
    problems: list[InputProblem] = []
    for path in _image_files(images_dir):
        unreadable = _check_readable(path, "image") if check_images else None
        if unreadable:
            problems.append(InputProblem(str(path), unreadable))
        else:
            found.append((str(path), ImageRecord(path=_absolute(path), label=None)))
    return found, problems


NEGATIVE_PREFIXES = ("not_", "not ", "no_", "no ", "non_", "non-")
"""How a label says "without the target" (``build-split`` writes ``not_Mustache`` and ``no sports ball``)."""


def target_from_labels(labels: set[str | None]) -> str | None:
    """The target a labelled dataset is about, when its labels name exactly one: ``{horse}`` or
    ``{horse, not_horse}`` give ``horse``; several classes, or none, give None (the user must say)."""
    names = {label for label in labels if label}
    positives = {name for name in names if not any(name.lower().startswith(prefix) for prefix in NEGATIVE_PREFIXES)}
    if len(positives) != 1:
        return None
    (target,) = positives
    negated = {(prefix + target).lower() for prefix in NEGATIVE_PREFIXES}
    return target if all(name.lower() in negated for name in names - positives) else None


def load_folder_dataset(
    images_dir: Path,
    labels_csv: Path | None = None,
    masks_dir: Path | None = None,
    check_images: bool = True,
) -> DatasetLoad:
    """Load an image folder, with labels from a CSV and ground-truth masks when given.

    Without ``labels_csv`` every image file under ``images_dir`` (recursively) is a record with
    label None. With it, the CSV has columns ``path`` (relative to ``images_dir`` or absolute)
    and ``label``, optionally ``split`` (train | val | test; default train); every other column
    is a group attribute. A mask is the file in ``masks_dir`` with the image's relative path and
    any image extension; an image without one has no mask. ``check_images`` reads every image's
    (and mask's) header, so unreadable files are reported now rather than midway through a job.

    Bad lines and files are skipped and listed in ``problems``; raises :class:`DatasetError`
    when the CSV or folder is unusable as a whole or no image is left.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: images folder not found")
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise DatasetError(f"{masks_dir}: masks folder not found")
    root = _absolute(images_dir)
    if labels_csv is None:
        found, problems = _records_from_folder(images_dir, check_images)
    else:
        found, problems = _records_from_csv(images_dir, Path(labels_csv), check_images)

    masks = _mask_index(_absolute(masks_dir)) if masks_dir is not None else {}
    records: list[ImageRecord] = []
    for source, record in found:
        mask = masks.get(_mask_key(record.path, root))
        if mask is not None and check_images:
            unreadable = _check_readable(mask, f"mask {mask}")
            if unreadable:
                problems.append(InputProblem(source, unreadable))
                continue
        records.append(replace(record, mask_path=mask))

    if not records:
        detail = f" ({len(problems)} skipped, first: {problems[0]})" if problems else ""
        raise DatasetError(f"no images found in {images_dir}{detail}")
    return DatasetLoad(records=records, problems=problems)
