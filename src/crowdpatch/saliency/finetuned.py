"""Where a study keeps its fine-tuned saliency weights: ``saliency/finetuned-<count>.pt`` in the project folder.

Kept apart from the training code so step 1 finds the newest weights without importing PyTorch.
"""

from __future__ import annotations

from pathlib import Path

PATTERN = "finetuned-{count}.pt"


def finetuned_file(folder: Path, count: int) -> Path:
    """The weights fine-tuned on ``count`` finished masks."""
    return Path(folder) / PATTERN.format(count=count)


def newest_finetuned(folder: Path) -> Path | None:
    """The weights fine-tuned on the most finished masks in ``folder``, or None."""
    found = []
    for path in Path(folder).glob("finetuned-*.pt"):
        count = path.stem.removeprefix("finetuned-")
        if count.isdigit():
            found.append((int(count), path))
    return max(found)[1] if found else None
