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

import numpy as np

from crowdpatch.config import SimulationConfig, TimeModel

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
