"""The outlines a pick or a correction question shows, as the server draws them.

A pick's candidates are masks computed from the extreme points it was built from, a correction's
mask is the picked candidate redrawn from the clicks of the rounds before it
(:class:`~crowdpatch.masks.candidate_store.CandidateStore`: once per question, then read back from
the project's ``candidates/`` folder). The page asks for all of a pick's pictures at once, so the
first request computes the masks while the others wait for it instead of computing them again; what
a picture needs of them, their outer contours, is kept for the most recent questions.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crowdpatch.config import ProjectConfig
from crowdpatch.masks.candidate_store import CandidateStore
from crowdpatch.saliency.outline import outline_polygons
from crowdpatch.server.images import Outlines, as_outlines

KEPT = 512
"""Questions whose contours stay in memory (a few kilobytes each): those on workers' screens, and then some."""


class ChoiceOutlines:
    """The contours of each pick's candidate masks, in the order the pick shows them, and of each correction's mask."""

    def __init__(self, project_dir: Path, config: ProjectConfig):
        self.store = CandidateStore(project_dir, config)
        self.lock = threading.Lock()
        self.kept: OrderedDict[int, tuple[Outlines, ...]] = OrderedDict()

    def of(self, task_id: int, image_path: str, spec: dict[str, Any]) -> tuple[Outlines, ...]:
        """Pick ``task_id``'s candidate k's contours (full-image pixels) at index k."""
        return self._kept(task_id, lambda: self.store.masks(task_id, image_path, spec))

    def corrected(self, task_id: int, image_path: str, spec: dict[str, Any]) -> Outlines:
        """The contours (full-image pixels) of the mask correction ``task_id`` asks about (``spec``: its row's)."""
        return self._kept(task_id, lambda: [self.store.corrected(image_path, spec)])[0]

    def _kept(self, task_id: int, masks: Callable[[], list[np.ndarray]]) -> tuple[Outlines, ...]:
        """The contours of ``masks()`` for question ``task_id``: computed by one thread at a time, then kept."""
        with self.lock:
            if task_id not in self.kept:
                self.kept[task_id] = tuple(as_outlines(outline_polygons(mask)) for mask in masks())
                while len(self.kept) > KEPT:
                    self.kept.popitem(last=False)
            self.kept.move_to_end(task_id)
            return self.kept[task_id]
