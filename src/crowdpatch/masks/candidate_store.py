"""The candidate masks of a project's pick questions, and their corrections, computed once and kept on disk.

A pick question's row holds the extreme points it was built from and the names of its candidates
(``spec``); a correction question's row holds the pick, the candidate picked and the clicks of the
rounds before it. Whoever needs the masks (the server drawing them, the simulator judging them,
the mask builder using the crowd's choice) asks this store: the first caller computes them
(:mod:`crowdpatch.masks.candidates`, deterministic) outside any database transaction, and every
later one reads the PNGs back from ``candidates/`` in the project folder.

A click means "wrong here" relative to the mask shown when it was made: outside that mask it marks
object, inside it background. Only the store knows those masks, so clicks are stored as clicked and
given their meaning here, round by round.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import load_rgb
from crowdpatch.masks.candidates import (
    CROP_SALIENCY,
    EDGES,
    GRABCUT,
    SALIENCY_OUTLINE,
    grabcut_corrected,
    grabcut_from_edges,
    grabcut_from_points,
    saliency_on_crop,
)
from crowdpatch.saliency import SaliencyBackend, backend_from_config
from crowdpatch.saliency.outline import salient_pixels

KEPT_IN_MEMORY = 64
"""Masks kept decoded (the most recently used); the rest are read back from their PNGs."""

Rounds = list[list[list[float]]]
"""Clicks per correction round, as clicked: ``[[[x, y], ...], ...]``."""


class CandidateStore:
    """Candidate masks by (pick question, candidate name), as full-image boolean arrays."""

    def __init__(self, project_dir: Path, config: ProjectConfig):
        self.folder = Path(project_dir) / "candidates"
        self.config = config
        self._loaded: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    @cached_property
    def backend(self) -> SaliencyBackend:
        return backend_from_config(self.config.saliency)

    def path(self, task_id: int, name: str) -> Path:
        return self.folder / f"{task_id:08d}-{name}.png"

    def masks(self, task_id: int, image_path: str, spec: dict[str, Any]) -> list[np.ndarray]:
        """The candidates of pick question ``task_id`` (``spec``: its row's), in the order shown."""
        rgb = _LazyImage(image_path)
        return [
            self._cached(task_id, name, lambda name=name: self._compute(name, rgb(), spec["points"]))
            for name in spec["candidates"]
        ]

    def corrected(self, image_path: str, spec: dict[str, Any], rounds: Rounds | None = None) -> np.ndarray:
        """The picked candidate of a correction question (``spec``: its row's) after ``rounds`` of clicks (default:
        the rounds before it, so the mask it shows)."""
        rounds = spec["rounds"] if rounds is None else rounds
        pick, name, points = spec["pick"], spec["candidate"], spec["points"]
        rgb = _LazyImage(image_path)
        if name == SALIENCY_OUTLINE:
            current = self._cached(pick, name, lambda: salient_pixels(spec["saliency"], self.config.saliency.threshold))
        else:
            current = self.masks(pick, image_path, {"points": points, "candidates": [name]})[0]
        labelled: list[tuple[float, float, bool]] = []
        for number, clicks in enumerate(rounds, start=1):
            labelled = labelled + [(x, y, not _at(current, x, y)) for x, y in clicks]
            current = self._cached(
                pick,
                f"{name}-r{number}",
                lambda base=current, labelled=labelled: grabcut_corrected(rgb(), points, base, labelled),
            )
        return current

    def _cached(self, task_id: int, name: str, compute) -> np.ndarray:
        key = (task_id, name)
        if key not in self._loaded:
            path = self.path(task_id, name)
            if path.exists():
                with Image.open(path) as image:
                    mask = np.asarray(image) > 0
            else:
                mask = compute()
                self._save(path, mask)
            self._loaded[key] = mask
            if len(self._loaded) > KEPT_IN_MEMORY:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]

    def _compute(self, name: str, rgb: np.ndarray, points: list[list[float]]) -> np.ndarray:
        if name == GRABCUT:
            return grabcut_from_points(rgb, points)
        if name == EDGES:
            return grabcut_from_edges(rgb, points)
        if name == CROP_SALIENCY:
            return saliency_on_crop(rgb, points, lambda crop: self.backend.predict([crop])[0])
        raise ValueError(f"unknown candidate {name!r}")

    def _save(self, path: Path, mask: np.ndarray) -> None:
        """Written to a temporary name of this process and renamed, so a killed process never leaves half a PNG
        behind, and server processes computing the same mask at once never collide (both write the same bytes)."""
        self.folder.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp)
        tmp.replace(path)


class _LazyImage:
    """The photo, read on first use only (a cached mask needs none)."""

    def __init__(self, path: str):
        self.path, self.rgb = Path(path), None

    def __call__(self) -> np.ndarray:
        if self.rgb is None:
            self.rgb = load_rgb(self.path)
        return self.rgb


def _at(mask: np.ndarray, x: float, y: float) -> bool:
    height, width = mask.shape
    return bool(mask[int(np.clip(y, 0, height - 1)), int(np.clip(x, 0, width - 1))])
