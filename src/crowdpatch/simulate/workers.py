"""Simulated crowd workers that answer from ground-truth masks.

A worker says "yes" to a window when the share of it covered by the object reaches its own
threshold, then flips the answer with its own error rate. Spammers do not look: they answer at
random, always "yes", always "no", or at random faster than anyone can read the question
(``too_fast``). Times come from the configurable human time model, so every figure built on them
is *modeled*, never measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from crowdpatch.config import SimulationConfig, TimeModel
from crowdpatch.masks.candidates import extreme_points_of

WorkerKind = Literal["honest", "random", "always_yes", "always_no", "too_fast"]

SPAMMER_SPEED = 0.4
"""Spammers answer in this share of an honest worker's time: they do not look."""

TOO_FAST_MEDIAN_SECONDS = 0.15
"""Median seconds of a ``too_fast`` spammer per answer, whatever the task: a script or a click-through,
half the default ``min_seconds_per_answer`` (no one reads a question and decides in 0.15 s)."""


@dataclass(frozen=True)
class SimulatedWorker:
    external_id: str
    kind: WorkerKind
    threshold: float
    error_rate: float
    speed: float
    """Multiplier on the time model's medians (a slow worker > 1)."""

    def as_attributes(self) -> dict:
        return asdict(self)

    @classmethod
    def from_attributes(cls, data: dict) -> "SimulatedWorker":
        return cls(**{key: data[key] for key in ("external_id", "kind", "threshold", "error_rate", "speed")})


def draw_workers(
    config: SimulationConfig, count: int, rng: np.random.Generator, start: int = 0
) -> list[SimulatedWorker]:
    """``count`` workers; ``round(spammers * count)`` of them spammers, of ``config.spammer_kinds`` in turn."""
    n_spammers = round(config.spammers * count)
    spammer_slots = set(rng.choice(count, size=n_spammers, replace=False).tolist()) if n_spammers else set()
    workers = []
    for i in range(count):
        if i in spammer_slots:
            spammers_so_far = sum(1 for w in workers if w.kind != "honest")
            kind: WorkerKind = config.spammer_kinds[spammers_so_far % len(config.spammer_kinds)]
        else:
            kind = "honest"
        workers.append(
            SimulatedWorker(
                external_id=f"sim-{start + i:04d}",
                kind=kind,
                threshold=float(rng.uniform(config.threshold_low, config.threshold_high)),
                error_rate=float(min(0.5, rng.uniform(0, 2 * config.worker_error))),
                speed=float(SPAMMER_SPEED if kind != "honest" else np.exp(rng.normal(0, 0.25))),
            )
        )
    return workers


def answer_window(worker: SimulatedWorker, coverage: float, rng: np.random.Generator) -> bool:
    if worker.kind == "always_yes":
        return True
    if worker.kind == "always_no":
        return False
    if worker.kind in ("random", "too_fast"):
        return bool(rng.random() < 0.5)
    truth = coverage >= worker.threshold
    return truth != bool(rng.random() < worker.error_rate)


def answer_region(worker: SimulatedWorker, recall: float, rng: np.random.Generator) -> bool:
    """'Is the <target> inside the highlighted area?': yes when most of the object is inside."""
    if worker.kind != "honest":
        return answer_window(worker, 0.0, rng)
    return (recall >= 0.5) != bool(rng.random() < worker.error_rate)


def answer_grid(worker: SimulatedWorker, coverages: list[float], rng: np.random.Generator) -> list[int]:
    """The cells the worker clicks: the ones it would answer "yes" one by one."""
    return [i for i, coverage in enumerate(coverages) if answer_window(worker, coverage, rng)]


def answer_seconds(median: float, worker: SimulatedWorker, time_model: TimeModel, rng: np.random.Generator) -> float:
    """Lognormal human time around ``median`` scaled by the worker's speed (a too-fast spammer ignores ``median``)."""
    if worker.kind == "too_fast":
        return float(TOO_FAST_MEDIAN_SECONDS * np.exp(rng.normal(0.0, time_model.sigma)))
    return float(median * worker.speed * np.exp(rng.normal(0.0, time_model.sigma)))


OUTLINE_BAR_OFFSET = 0.6
"""A worker accepts an outline when its IoU with the object reaches 0.6 + its window threshold
(0.65-0.9 with the default thresholds): one strictness trait for windows and outlines alike."""


def answer_outline(worker: SimulatedWorker, iou: float, rng: np.random.Generator) -> bool:
    """'Does the outline cover the <target> well?': yes when it matches the object closely enough."""
    if worker.kind != "honest":
        return answer_window(worker, 0.0, rng)
    return (iou >= OUTLINE_BAR_OFFSET + worker.threshold) != bool(rng.random() < worker.error_rate)


EXTREME_JITTER = 0.02
"""An honest worker's click lands within this share of the object's size (one standard deviation) of the true
extreme point: extreme clicking is accurate to a few pixels (Papadopoulos et al. 2017)."""

EXTREME_MISS = 0.15
"""A missed click (each point, with half the worker's error rate) lands this share of the object's size away."""


def answer_extreme(worker: SimulatedWorker, obj: np.ndarray, rng: np.random.Generator) -> dict:
    """'Click the four ends of the <target>': the true ends with a little jitter, a missed click now and then,
    or ``{"not_here": true}`` where there is no object. Spammers click anywhere (or always say "not here")."""
    height, width = obj.shape
    if worker.kind == "always_no":
        return {"not_here": True}
    truth = extreme_points_of(obj) if worker.kind == "honest" else None
    if truth is None:
        if worker.kind == "honest" and rng.random() >= worker.error_rate:
            return {"not_here": True}
        return {"points": [[float(rng.uniform(0, width - 1)), float(rng.uniform(0, height - 1))] for _ in range(4)]}
    xs, ys = [p[0] for p in truth], [p[1] for p in truth]
    size = float(np.sqrt((max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1)))
    points = []
    for x, y in truth:
        spread = EXTREME_MISS if rng.random() < worker.error_rate / 2 else EXTREME_JITTER
        x, y = x + rng.normal(0, spread * size), y + rng.normal(0, spread * size)
        points.append([float(np.clip(x, 0, width - 1)), float(np.clip(y, 0, height - 1))])
    return {"points": points}


PICK_BAR = 0.5
"""An outline with less IoU than this is not 'on the target': a pick answers 'none' when no candidate reaches it."""


def answer_pick(worker: SimulatedWorker, ious: list[float], rng: np.random.Generator) -> dict:
    """'Which outline is closest to the <target>?': the best one if it is on the target at all (:data:`PICK_BAR`),
    else none; a slip picks something else. Spammers pick at random."""
    options: list[int | None] = [*range(len(ious)), None]
    if worker.kind == "always_yes":
        return {"choice": 0}
    if worker.kind == "always_no":
        return {"choice": None}
    if worker.kind != "honest":
        return {"choice": options[int(rng.integers(len(options)))]}
    best = int(np.argmax(ious)) if ious else None
    choice = best if best is not None and ious[best] >= PICK_BAR else None
    if rng.random() < worker.error_rate:
        others = [option for option in options if option != choice]
        choice = others[int(rng.integers(len(others)))]
    return {"choice": choice}


CORRECTION_CLICKS = 3
"""Most errors an honest worker clicks in one correction round (the largest first)."""

SMALLEST_ERROR = 0.02
"""An error region smaller than this share of the object is not worth a click (an honest worker answers 'fits')."""


def answer_correction(
    worker: SimulatedWorker, shown: np.ndarray, obj: np.ndarray, valid: np.ndarray, rng: np.random.Generator
) -> dict:
    """'Click where the outline is wrong': one click deep inside each of the largest error regions (the click of
    interactive-segmentation studies, Xu et al. 2016), a slip now and then lands anywhere in the object's box.
    Spammers answer 'fits' or click at random."""
    height, width = shown.shape
    if worker.kind in ("always_yes", "always_no"):
        return {"clicks": []}
    if worker.kind != "honest":
        count = int(rng.integers(0, CORRECTION_CLICKS + 1))
        return {"clicks": [[float(rng.uniform(0, width - 1)), float(rng.uniform(0, height - 1))] for _ in range(count)]}
    error = ((shown != obj) & valid).astype(np.uint8)
    # Slivers along the boundary are not what a person clicks: only regions a few pixels thick count.
    error = cv2.morphologyEx(error, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(error)
    big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= SMALLEST_ERROR * max(1, int(obj.sum()))]
    big.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    clicks = []
    for i in big[:CORRECTION_CLICKS]:
        x0, y0, w, h = (int(v) for v in stats[i, :4])
        region = np.pad((labels[y0 : y0 + h, x0 : x0 + w] == i).astype(np.uint8), 1)
        depth = cv2.distanceTransform(region, cv2.DIST_L2, 3)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        if rng.random() < worker.error_rate / 2:
            ys, xs = np.nonzero(obj)
            x, y = rng.uniform(xs.min(), xs.max() + 1) - x0, rng.uniform(ys.min(), ys.max() + 1) - y0
        clicks.append([float(x0 + x), float(y0 + y)])
    return {"clicks": clicks}
