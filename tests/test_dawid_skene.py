"""The vectorized Dawid-Skene behind ``posteriors(votes, "ds")`` gives crowd-kit's numbers (crowd-kit: reference)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crowdpatch.aggregate import posteriors
from crowdpatch.aggregate.dawid_skene import BinaryDawidSkene
from crowdpatch.aggregate.votes import crowdkit_dawid_skene, dawid_skene
from helpers.votes import simulate_votes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit")


def tied_votes(seed: int, tasks: int = 120, workers: int = 8) -> pd.DataFrame:
    """Two votes per question, often one yes and one no; one worker only ever says yes, one only no."""
    rng = np.random.default_rng(seed)
    rows = []
    for task in range(tasks):
        for worker in rng.choice(workers, size=2, replace=False):
            label = 1 if worker == 0 else 0 if worker == 1 else int(rng.random() < 0.5)
            rows.append((f"{task // 10}:{task % 10}", str(worker), label))
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


FIXTURES: dict[str, pd.DataFrame] = {
    **{f"spammers-{seed}": simulate_votes(seed)[0] for seed in range(4)},
    "mostly-spammers": simulate_votes(7, tasks=200, workers=10, always_yes=6, votes=4)[0],
    "noisy": simulate_votes(8, tasks=150, workers=6, always_yes=0, error=0.35)[0],
    **{f"ties-{seed}": tied_votes(seed) for seed in range(3)},
}


@functools.cache
def crowd_kit(name: str) -> Any:
    """crowd-kit's Dawid-Skene fitted to a fixture (once: it takes seconds)."""
    return crowdkit_dawid_skene().fit(FIXTURES[name])


@pytest.mark.parametrize("name", list(FIXTURES))
def test_vectorized_dawid_skene_agrees_with_crowd_kit(name: str) -> None:
    reference = crowd_kit(name)
    ours = dawid_skene().fit(FIXTURES[name])
    expected = reference.probas_[1]
    got = ours.probas_[1].reindex(expected.index)
    assert got.notna().all()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.probas_[0].reindex(expected.index), reference.probas_[0], rtol=0, atol=1e-6)
    # The same EM path: as many iterations, the same lower bound at each.
    np.testing.assert_allclose(ours.loss_history_, reference.loss_history_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.priors_, reference.priors_.sort_index().to_numpy(), rtol=0, atol=1e-6)


def test_the_fixtures_reach_the_iteration_cap_and_stop_early() -> None:
    """Both ways EM ends are covered: by the tolerance, and by the 100-iteration cap."""
    lengths = {len(crowd_kit(name).loss_history_) for name in FIXTURES}
    assert 100 in lengths and min(lengths) < 100


def test_posteriors_use_the_vectorized_dawid_skene() -> None:
    votes, _ = simulate_votes(11, tasks=80)
    expected = crowdkit_dawid_skene().fit(votes).probas_[1]
    got = posteriors(votes, "ds")
    assert set(got.index) == set(expected.index)
    np.testing.assert_allclose(got.reindex(expected.index), expected, rtol=0, atol=1e-6)


def test_labels_other_than_yes_and_no_are_refused() -> None:
    votes = pd.DataFrame([("t0", "w0", 2), ("t0", "w1", 0)], columns=["task", "worker", "label"])
    with pytest.raises(ValueError, match="labels 0 and 1"):
        BinaryDawidSkene().fit(votes)
