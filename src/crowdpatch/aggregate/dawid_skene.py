"""Dawid-Skene for yes/no votes, vectorized: crowd-kit's ``DawidSkene`` step for step, on integer codes.

crowd-kit's implementation joins and groups pandas frames keyed by the task and worker names on
every EM iteration; on a study of 10 million votes that is minutes and several GB per fit
(docs/benchmarks.md, "Aggregation at scale"). Here the names are coded once and every step is a
``numpy.bincount`` over the votes. It is the same model with the same numbers, not an approximation:

- initialization: the majority vote's shares per task, the class priors their mean, one M-step;
- M-step: each worker's confusion counts per (answer given, true class), only for the answers the
  worker gave, clipped below at 1e-10, normalized per true class;
- E-step: log2 likelihoods with the priors clipped at 1e-10, shifted by their maximum, normalized;
- stop after ``n_iter`` iterations or when the evidence lower bound per vote gains less than ``tol``;
  the posteriors returned are clipped below at 1e-10 (as crowd-kit's lower bound leaves them).

tests/test_dawid_skene.py holds it to crowd-kit within 1e-6; crowd-kit stays the reference there.
The tasks do not split into independent blocks: the workers span images, and their confusion
matrices (and the class priors) are estimated from all of their votes at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EPS = 1e-10
"""crowd-kit's floor for probabilities (priors, confusion entries, posteriors)."""


class BinaryDawidSkene:
    """Fits Dawid-Skene to votes labelled 0 (no) or 1 (yes); the crowd-kit aggregator interface: ``fit`` then
    ``probas_`` (P(no), P(yes) per task)."""

    def __init__(self, n_iter: int = 100, tol: float = 1e-5):
        self.n_iter = n_iter
        self.tol = tol
        self.probas_: pd.DataFrame | None = None
        self.priors_: np.ndarray | None = None
        self.loss_history_: list[float] = []

    def fit(self, data: pd.DataFrame) -> BinaryDawidSkene:
        """``data``: columns ``task``, ``worker``, ``label`` (0 or 1), one row per vote."""
        labels = data["label"].to_numpy()
        if len(labels) and not np.isin(labels, (0, 1)).all():
            raise ValueError("binary Dawid-Skene takes labels 0 and 1 only")
        tasks, task_index = pd.factorize(data["task"], sort=False)
        workers, worker_index = pd.factorize(data["worker"], sort=False)
        n_tasks, n_pairs = len(task_index), 2 * len(worker_index)
        if not n_tasks:
            self.probas_ = pd.DataFrame(columns=[0, 1], dtype=float)
            return self
        yes = labels.astype(bool)
        pair = (workers * 2 + yes).astype(np.intp)  # (worker, answer given): a row of its confusion matrix
        votes_per_task = np.bincount(tasks, minlength=n_tasks).astype(float)
        given = np.bincount(pair, minlength=n_pairs) > 0
        yes_votes = np.bincount(tasks, weights=yes, minlength=n_tasks)
        p_yes, p_no = yes_votes / votes_per_task, (votes_per_task - yes_votes) / votes_per_task
        priors = np.array([p_no.mean(), p_yes.mean()])
        counts, errors = self._m_step(tasks, pair, p_no, p_yes, given, n_pairs)
        loss = -np.inf
        self.loss_history_ = []
        for _ in range(self.n_iter):
            p_no, p_yes = self._e_step(tasks, pair, priors, errors, n_tasks)
            priors = np.array([p_no.mean(), p_yes.mean()])
            counts, errors = self._m_step(tasks, pair, p_no, p_yes, given, n_pairs)
            new_loss = self._lower_bound(votes_per_task, p_no, p_yes, priors, counts, errors, given) / len(labels)
            self.loss_history_.append(new_loss)
            if new_loss - loss < self.tol:
                break
            loss = new_loss
        self.priors_ = priors
        self.probas_ = pd.DataFrame(
            {0: np.maximum(p_no, EPS), 1: np.maximum(p_yes, EPS)}, index=pd.Index(task_index, name="task")
        )
        return self

    @staticmethod
    def _m_step(
        tasks: np.ndarray, pair: np.ndarray, p_no: np.ndarray, p_yes: np.ndarray, given: np.ndarray, n_pairs: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Confusion counts (pair x true class) and each worker's confusion matrix from them."""
        counts = np.stack(
            [
                np.bincount(pair, weights=p_no[tasks], minlength=n_pairs),
                np.bincount(pair, weights=p_yes[tasks], minlength=n_pairs),
            ],
            axis=1,
        )
        # Only the answers a worker gave have a row (crowd-kit groups the votes by worker and answer).
        clipped = np.where(given[:, None], np.maximum(counts, EPS), 0.0)
        per_worker = clipped.reshape(-1, 2, 2)
        errors = (per_worker / per_worker.sum(axis=1, keepdims=True)).reshape(-1, 2)
        return counts, errors

    @staticmethod
    def _e_step(
        tasks: np.ndarray, pair: np.ndarray, priors: np.ndarray, errors: np.ndarray, n_tasks: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """P(no), P(yes) per task from the priors and the confusion matrices of the workers who voted."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_errors = np.log2(errors)  # -inf only on rows no vote uses
            log_ratio = log_errors[:, 1] - log_errors[:, 0]
        log_priors = np.log2(np.maximum(priors, EPS))
        margin = np.bincount(tasks, weights=log_ratio[pair], minlength=n_tasks)
        margin += log_priors[1] - log_priors[0]  # log2 P(yes) - log2 P(no), up to the same constant
        scaled_no, scaled_yes = np.exp2(np.minimum(-margin, 0.0)), np.exp2(np.minimum(margin, 0.0))
        total = scaled_no + scaled_yes
        return scaled_no / total, scaled_yes / total

    @staticmethod
    def _lower_bound(
        votes_per_task: np.ndarray,
        p_no: np.ndarray,
        p_yes: np.ndarray,
        priors: np.ndarray,
        counts: np.ndarray,
        errors: np.ndarray,
        given: np.ndarray,
    ) -> float:
        """The evidence lower bound: expected joint log-likelihood over the posteriors plus their entropy.

        The expectation over votes of log P(answer | class) is the confusion counts times their logs
        (the counts are those expectations summed); the prior's term counts each task once per vote.
        """
        log_errors = np.log(errors[given])
        joint = float((counts[given] * log_errors).sum())
        log_priors = np.log(np.maximum(priors, EPS))
        joint += log_priors[0] * float(votes_per_task @ p_no) + log_priors[1] * float(votes_per_task @ p_yes)
        clipped_no, clipped_yes = np.maximum(p_no, EPS), np.maximum(p_yes, EPS)
        entropy = -float((clipped_no * np.log(clipped_no)).sum() + (clipped_yes * np.log(clipped_yes)).sum())
        return joint + entropy
