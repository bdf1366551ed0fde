"""Splits as in-memory tensors, and their compact file form.

Nothing here needs the project store, so a training run can happen on a machine that has only
PyTorch (a GPU box fed a ``.pt`` file written by ``crowdpatch train --export-tensors``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch.utils.data import Dataset

MEAN, STD = 0.5, 0.25
"""Pixel normalization: [0, 1] -> about [-2, 2]."""


@dataclass
class SplitTensors:
    images: torch.Tensor  # (N, 3, S, S) normalized
    labels: torch.Tensor  # (N,) long
    groups: torch.Tensor  # (N,) long
    guides: torch.Tensor  # (N, 1, S, S) in [0, 1]
    has_guide: torch.Tensor  # (N,) bool
    gt: torch.Tensor  # (N, 1, S, S) 1 object, 0 background, -1 ignore / unknown
    class_names: list[str]
    group_names: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


class GuidedDataset(Dataset):
    """(image, label, group, guide mask, has-guide) per item, for the DataLoader."""

    def __init__(self, split: SplitTensors):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        s = self.split
        return s.images[index], s.labels[index], s.groups[index], s.guides[index], s.has_guide[index]


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalized tensors back to [0, 1] pixels (for figures)."""
    return (images * STD + MEAN).clamp(0, 1)


def save_splits(splits: dict[str, SplitTensors], path: Path) -> None:
    """Write splits compactly: pixels and masks as uint8 (a quarter of float32's size)."""
    tmp = Path(path).with_suffix(".tmp")
    torch.save(_pack(splits), tmp)
    tmp.replace(path)


def load_splits_file(path: Path) -> dict[str, SplitTensors]:
    return _unpack(torch.load(path, map_location="cpu", weights_only=True))


def _pack(splits: dict[str, SplitTensors]) -> dict[str, dict]:
    packed = {}
    for name, split in splits.items():
        packed[name] = {
            "images": (denormalize(split.images) * 255).round().to(torch.uint8),
            "guides": (split.guides * 255).round().to(torch.uint8),
            "gt": split.gt.to(torch.int8),
            **{f.name: getattr(split, f.name) for f in fields(split) if f.name not in ("images", "guides", "gt")},
        }
    return packed


def _unpack(packed: dict[str, dict]) -> dict[str, SplitTensors]:
    splits = {}
    for name, data in packed.items():
        data = dict(data)
        data["images"] = (data["images"].float() / 255.0 - MEAN) / STD
        data["guides"] = data["guides"].float() / 255.0
        data["gt"] = data["gt"].float()
        splits[name] = SplitTensors(**data)
    return splits


def save_experiment_tensors(splits_by_guide: dict[str, dict[str, SplitTensors]], path: Path) -> None:
    """All guides of one project in one file: the splits once, plus each guide's training masks."""
    guides = list(splits_by_guide)
    packed_guides = {
        guide: {
            "guides": (splits["train"].guides * 255).round().to(torch.uint8),
            "has_guide": splits["train"].has_guide,
        }
        for guide, splits in splits_by_guide.items()
    }
    tmp = Path(path).with_suffix(".tmp")
    torch.save({"splits": _pack(splits_by_guide[guides[0]]), "train_guides": packed_guides}, tmp)
    tmp.replace(path)


def load_experiment_tensors(path: Path) -> dict[str, dict[str, SplitTensors]]:
    """Read in memory only: several runs may load one file at once (one process per GPU job)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    base = _unpack(data["splits"])
    result = {}
    for guide, masks in data["train_guides"].items():
        train = base["train"]
        guided = SplitTensors(
            **{**train.__dict__, "guides": masks["guides"].float() / 255.0, "has_guide": masks["has_guide"]}
        )
        result[guide] = {**base, "train": guided}
    return result
