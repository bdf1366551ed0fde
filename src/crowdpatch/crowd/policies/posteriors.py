"""The adaptive policy's model of the answers: worker accuracies, yes/no posteriors, grid-cell posteriors.

The policy reads it to decide what to ask next; the mask builder reads the same model to turn an
adaptive grid family's answers into a mask (:func:`grid_posteriors`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sqlalchemy import select, union_all
from sqlalchemy.orm import Session, aliased

from crowdpatch.aggregate.votes import grid_votes
from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.kinds import CELL, YES, YES_NO_KINDS
from crowdpatch.crowd.questions import cell_index, grid_resolution
from crowdpatch.patches.lattice import grid_cells
from crowdpatch.saliency.outline import cell_shares, salient_pixels
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow


def logit(p: float | np.ndarray) -> Any:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(x: float | np.ndarray) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


AGREEMENT_WINDOW = 200
"""Peer agreements read per worker: its most recent decided yes/no answers. Estimating an accuracy then costs the
same at a worker's 10,000th answer as at its 200th (reading the whole history made a study's total cost grow
faster than its size), and the recent answers are the ones that say how the worker answers now."""


def worker_accuracies(session: Session, worker_ids: set[int], config: ProjectConfig) -> dict[int, float]:
    """Each worker's accuracy from its gold record and its agreement with its peers, shrunk toward the honest prior.

    Gold comes rarely (a few percent of questions), while a spammer answers fast and often; so every
    decided yes/no question where the *other* workers agreed among themselves counts too, as one
    observation of whether this worker agrees (its last :data:`AGREEMENT_WINDOW` such answers).
    ``prior_weight`` pseudo-answers at ``crowd.honest_gold_accuracy`` keep a newcomer's weight at the honest prior.
    """
    if not worker_ids:
        return {}
    honest = config.crowd.honest_gold_accuracy
    weight = config.adaptive.prior_weight
    correct = {w: 0.0 for w in worker_ids}
    seen = {w: 0.0 for w in worker_ids}
    for worker_id, gold_seen, gold_correct in session.execute(
        select(WorkerRow.id, WorkerRow.gold_seen, WorkerRow.gold_correct).where(WorkerRow.id.in_(worker_ids))
    ):
        seen[worker_id] += gold_seen or 0
        correct[worker_id] += gold_correct or 0
    recent = union_all(
        *(
            select(
                select(AnswerRow.worker_id, AnswerRow.task_id, AnswerRow.value)
                .join(TaskRow, TaskRow.id == AnswerRow.task_id)
                .where(AnswerRow.worker_id == worker_id, TaskRow.state == "done", TaskRow.kind.in_(YES_NO_KINDS))
                .order_by(AnswerRow.id.desc())
                .limit(AGREEMENT_WINDOW)
                .subquery()
            )
            for worker_id in sorted(worker_ids)
        )
    ).subquery()
    theirs, peer = aliased(AnswerRow), aliased(WorkerRow)
    others: dict[tuple[int, int], tuple[Any, set[Any]]] = {}
    for worker_id, task_id, my_value, their_value in session.execute(
        select(recent.c.worker_id, recent.c.task_id, recent.c.value, theirs.value)
        .join(theirs, (theirs.task_id == recent.c.task_id) & (theirs.worker_id != recent.c.worker_id))
        .join(peer, peer.id == theirs.worker_id)
        .where(peer.banned.is_(False))
    ):
        others.setdefault((worker_id, task_id), (my_value, set()))[1].add(their_value)
    for (worker_id, _), (my_value, values) in others.items():
        if len(values) == 1:
            seen[worker_id] += 1
            correct[worker_id] += float(my_value in values)
    return {w: float(np.clip((correct[w] + weight * honest) / (seen[w] + weight), 0.5, 0.99)) for w in worker_ids}


def vote_weight(accuracy: float) -> float:
    """Log-likelihood ratio one answer of a worker this accurate carries."""
    return math.log(accuracy / (1 - accuracy))


def yes_posterior(prior: float, votes: list[tuple[float, bool]]) -> float:
    """P(yes) after independent answers ``(accuracy, said_yes)``."""
    total = float(logit(prior)) + sum(vote_weight(acc) * (1 if yes else -1) for acc, yes in votes)
    return float(sigmoid(total))


def cell_posteriors(evidence: np.ndarray, shares: np.ndarray, size: int, config: ProjectConfig) -> np.ndarray:
    """P(object) per grid cell from the answers' log-likelihood ratios, the saliency map and the neighbours.

    ``evidence``: summed log-likelihood ratio of the answers per cell (row-major). The saliency share
    moves a cell's prior by up to ``saliency_prior``; the share of its 8 neighbours that the answers
    and the map call object moves it by up to ``neighbour_prior``: an isolated click far from the
    object, or a hole inside it, is doubted until someone confirms it.
    """
    adaptive = config.adaptive
    saliency_logit = logit(0.5 + adaptive.saliency_prior * (2 * shares - 1))
    first = (evidence + saliency_logit).reshape(size, size) > 0
    padded = np.pad(first.astype(float), 1)
    counts = np.pad(np.ones_like(first, dtype=float), 1)
    neighbours = (
        sum(padded[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - first
    )
    present = sum(counts[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - 1
    share = (neighbours / np.maximum(present, 1)).reshape(-1)
    neighbour_logit = logit(0.5 + adaptive.neighbour_prior * (2 * share - 1))
    return sigmoid(evidence + saliency_logit + neighbour_logit)


# A region's grid questions form a family under its first-look grid (the root): boundary rounds (grid
# screens where only the uncertain cells are clickable) and single-cell follow-ups. All their votes are
# read on one lattice of ``resolution`` x ``resolution`` cells.


def grid_evidence(session: Session, config: ProjectConfig, root: TaskRow) -> tuple[np.ndarray, np.ndarray, list[Box]]:
    """Summed answer log-likelihood ratios per fine cell over the whole family, the saliency shares, the fine cells."""
    resolution = grid_resolution(root)
    cells = grid_cells(Box.from_list(root.box), resolution)
    family = session.execute(
        select(
            TaskRow.id, TaskRow.kind, TaskRow.key, TaskRow.grid_size, TaskRow.spec, AnswerRow.worker_id, AnswerRow.value
        )
        .join(AnswerRow, AnswerRow.task_id == TaskRow.id)
        .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
        .where((TaskRow.id == root.id) | (TaskRow.parent_id == root.id), WorkerRow.banned.is_(False))
    ).all()
    accuracy = worker_accuracies(session, {row.worker_id for row in family}, config)
    evidence = np.zeros(resolution * resolution)
    for row in family:
        weight = vote_weight(accuracy[row.worker_id])
        if row.kind == CELL:
            evidence[cell_index(row.key)] += weight * (1 if row.value == YES else -1)
            continue
        for cell, label in grid_votes(row.value, row.grid_size or 1, row.spec):
            coarse = (row.grid_size or 1) < resolution
            evidence[cell] += weight * (config.adaptive.coarse_weight if coarse else 1.0) * (1 if label else -1)
    image = session.get(ImageRow, root.image_id)
    if image.saliency_path:
        shares = cell_shares(salient_pixels(image.saliency_path, config.saliency.threshold), cells)
    else:
        shares = np.full(resolution * resolution, 0.5)
    return evidence, shares, cells


def grid_posteriors(session: Session, config: ProjectConfig, root: TaskRow) -> np.ndarray:
    """P(object) per fine cell of a grid family, from every answer so far."""
    evidence, shares, _ = grid_evidence(session, config, root)
    return cell_posteriors(evidence, shares, grid_resolution(root), config)
