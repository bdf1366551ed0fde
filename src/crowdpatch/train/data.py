"""A project's images, labels, groups and attention masks as tensors, split by train / val / test.

Datasets here are small (the built-in benchmark, a few thousand images at 64-128 px), so each split
is loaded once into memory: no decoding in the training loop, and identical batches on every rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from sqlalchemy import select

from crowdpatch.datasets import MASK_IGNORE, MASK_OBJECT, load_mask, load_rgb
from crowdpatch.masks.build import saliency_binary
from crowdpatch.project import Project
from crowdpatch.saliency.stored import load_saliency
from crowdpatch.store.models import ImageRow, MaskRow
from crowdpatch.train.tensors import MEAN, STD, SplitTensors

GUIDES = ("none", "saliency", "patch", "gt")
"""Where the attention mask comes from: nowhere (plain training), the saliency map alone, the crowd's
patch votes, or the ground truth (the upper bound a polygon annotation would give)."""


def group_name(label: str, groups: dict) -> str:
    return "|".join([label, *(f"{k}={groups[k]}" for k in sorted(groups))])


def _resize(array: np.ndarray, size: int, resample: int) -> np.ndarray:
    if array.shape[0] == size and array.shape[1] == size:
        return array
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def load_splits(
    project: Project, guide: str, size: int, progress: Callable[[int], None] | None = None
) -> dict[str, SplitTensors]:
    """Every labelled image of the project, per split, with the ``guide`` masks (train split only)."""
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; choose from {', '.join(GUIDES)}")
    with project.sessions() as session:
        rows = session.execute(
            select(ImageRow, MaskRow.file)
            .outerjoin(MaskRow, (MaskRow.image_id == ImageRow.id) & (MaskRow.source == "patch"))
            .where(ImageRow.project_id == project.id, ImageRow.stage != "error", ImageRow.label.is_not(None))
            .order_by(ImageRow.id)
        ).all()
    if not rows:
        raise ValueError("the project has no labelled images to train on (labels come from the CSV given at init)")
    class_names = sorted({image.label for image, _ in rows})
    group_names = sorted({group_name(image.label, image.groups) for image, _ in rows})
    buckets: dict[str, list] = {}
    for image, patch_file in rows:
        buckets.setdefault(image.split, []).append((image, patch_file))
    _check_training_split(buckets.get("train", []), guide, class_names)
    splits = {}
    for split, items in buckets.items():
        splits[split] = _load_split(
            items, guide if split == "train" else "none", size, class_names, group_names, progress
        )
    return splits


def _check_training_split(train: list[tuple[ImageRow, str | None]], guide: str, class_names: list[str]) -> None:
    """Refuse, naming what is missing, a training split the run cannot learn from: one without images, without
    some class, or without a single mask of its guide.

    A group (class and attribute) missing from the split is no error: a training set where the shortcut holds
    without exception is a legitimate test of whether a model learned the object.
    """
    if not train:
        raise ValueError("the project has no images in its 'train' split (splits come from the CSV given at init)")
    missing = sorted(set(class_names) - {image.label for image, _ in train})
    if missing:
        raise ValueError(
            f"the 'train' split has no images of class {', '.join(repr(name) for name in missing)}: a classifier "
            "cannot learn a class it never sees (check the split column of the CSV given at init)"
        )
    if guide == "patch" and not any(patch_file for _, patch_file in train):
        raise ValueError("no patch masks yet: run 'crowdpatch masks' (after propose and simulate or serve) first")
    if guide == "gt" and not any(image.mask_path for image, _ in train):
        raise ValueError("no ground-truth masks in the 'train' split: give --masks at init to train with guide gt")
    if guide == "saliency" and not any(image.saliency_path for image, _ in train):
        raise ValueError("no saliency maps yet: run 'crowdpatch propose' first to train with guide saliency")


def _load_split(items, guide: str, size: int, class_names, group_names, progress) -> SplitTensors:
    n = len(items)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    guides = np.zeros((n, size, size), dtype=np.float32)
    has_guide = np.zeros(n, dtype=bool)
    gt = np.full((n, size, size), -1, dtype=np.int8)
    labels, groups, names = [], [], []
    for i, (image, patch_file) in enumerate(items):
        rgb = load_rgb(Path(image.path))
        images[i] = _resize(rgb, size, Image.BILINEAR)
        height, width = rgb.shape[:2]
        truth = load_mask(Path(image.mask_path), (width, height)) if image.mask_path else None
        if truth is not None:
            small = _resize(truth, size, Image.NEAREST)
            gt[i] = np.where(small == MASK_IGNORE, -1, (small == MASK_OBJECT).astype(np.int8))
        mask = _guide_mask(guide, image, patch_file, truth)
        if mask is not None:
            guides[i] = _resize((mask * 255).astype(np.uint8), size, Image.BILINEAR) / 255.0
            has_guide[i] = True
        labels.append(class_names.index(image.label))
        groups.append(group_names.index(group_name(image.label, image.groups)))
        names.append(Path(image.path).name)
        if progress:
            progress(1)
    return SplitTensors(
        images=((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0) - MEAN) / STD,
        labels=torch.tensor(labels, dtype=torch.long),
        groups=torch.tensor(groups, dtype=torch.long),
        guides=torch.from_numpy(guides).unsqueeze(1),
        has_guide=torch.from_numpy(has_guide),
        gt=torch.from_numpy(gt).unsqueeze(1).float(),
        class_names=list(class_names),
        group_names=list(group_names),
        names=names,
    )


def _guide_mask(guide: str, image: ImageRow, patch_file: str | None, truth: np.ndarray | None) -> np.ndarray | None:
    """The attention mask of one image in [0, 1] at its own size, or None when this guide has none."""
    if guide == "gt" and truth is not None:
        return (truth == MASK_OBJECT).astype(np.float32)
    if guide == "saliency" and image.saliency_path:
        return saliency_binary(load_saliency(image.saliency_path)).astype(np.float32)
    if guide == "patch" and patch_file:
        return np.asarray(Image.open(patch_file), dtype=np.float32) / 255.0
    return None


def with_masks_of(splits: dict[str, SplitTensors], other: dict[str, SplitTensors]) -> dict[str, SplitTensors]:
    """``splits`` with the training masks of ``other``: another project's crowd masks over the same photos.

    Images are matched by file name, so two studies of one dataset (say, two planners) can be compared
    on identical training data; an image the other project has no mask for trains without one.
    """
    train, theirs = splits["train"], other.get("train")
    if theirs is None:
        raise ValueError("the other project has no 'train' split")
    index = {name: i for i, name in enumerate(theirs.names)}
    rows = [index.get(name, -1) for name in train.names]
    matched = [i for i, row in enumerate(rows) if row >= 0 and bool(theirs.has_guide[row])]
    if not matched:
        raise ValueError("the other project has no mask for any training image of this one (matched by file name)")
    guides = torch.zeros_like(train.guides)
    has_guide = torch.zeros_like(train.has_guide)
    mine = torch.tensor(matched, dtype=torch.long)
    source = torch.tensor([rows[i] for i in matched], dtype=torch.long)
    guides[mine] = theirs.guides[source]
    has_guide[mine] = True
    return {**splits, "train": SplitTensors(**{**train.__dict__, "guides": guides, "has_guide": has_guide})}
