"""Simulated crowds of yes/no votes with a known truth, for the aggregation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def simulate_votes(
    seed: int,
    tasks: int = 300,
    workers: int = 15,
    always_yes: int = 5,
    error: float = 0.1,
    yes_share: float = 0.3,
    votes: int = 3,
) -> tuple[pd.DataFrame, pd.Series]:
    """A crowd with known truth: honest workers flip ``error`` of their answers, spammers always say yes.

    Most windows are "no" (as in step 2), which is where always-yes spammers hurt a plain majority.
    """
    rng = np.random.default_rng(seed)
    truth = pd.Series((rng.random(tasks) < yes_share).astype(int), index=[f"t{t}" for t in range(tasks)])
    rows = []
    for task, label in truth.items():
        for worker in rng.choice(workers, size=votes, replace=False):
            if worker < always_yes:
                answer = 1
            else:
                answer = int(label) ^ int(rng.random() < error)
            rows.append((task, f"w{worker}", answer))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), truth
