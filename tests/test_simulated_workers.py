"""Simulated workers, the human time model, and the planner's per-question rules (votes, majority, gold)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crowdpatch.boxes import Box
from crowdpatch.config import SimulationConfig, TimeModel
from crowdpatch.crowd.dispatch.rules import AnswerRejected, validate_answer
from crowdpatch.crowd.gold import GOLD_YES_COVERAGE, gold_windows
from crowdpatch.crowd.kinds import NO, YES
from crowdpatch.crowd.votes import majority, votes_target
from crowdpatch.datasets.masks import MASK_BACKGROUND, MASK_IGNORE, MASK_OBJECT
from crowdpatch.masks.coverage import CoverageOracle
from crowdpatch.simulate.workers import (
    SPAMMER_SPEED,
    SimulatedWorker,
    answer_grid,
    answer_seconds,
    answer_window,
    draw_workers,
)

LABELS = st.sampled_from([MASK_BACKGROUND, MASK_OBJECT, MASK_IGNORE])


@st.composite
def masks_and_boxes(draw):
    height, width = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    mask = draw(arrays(np.uint8, (height, width), elements=LABELS))
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    return mask, Box(x0, y0, x1, y1)


def honest(threshold: float = 0.2, error_rate: float = 0.0, speed: float = 1.0) -> SimulatedWorker:
    return SimulatedWorker("sim-test", "honest", threshold, error_rate, speed)


# -- coverage ----------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(case=masks_and_boxes())
def test_coverage_is_the_object_share_of_the_labelled_pixels_in_the_box(case) -> None:
    mask, box = case
    inside = mask[box.y0 : box.y1, box.x0 : box.x1]
    labelled = int((inside != MASK_IGNORE).sum())
    expected = (inside == MASK_OBJECT).sum() / labelled if labelled else 0.0
    assert CoverageOracle(mask).coverage(box) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(case=masks_and_boxes())
def test_recall_is_the_share_of_the_whole_object_inside_the_box(case) -> None:
    mask, box = case
    total = int((mask == MASK_OBJECT).sum())
    inside = int((mask[box.y0 : box.y1, box.x0 : box.x1] == MASK_OBJECT).sum())
    oracle = CoverageOracle(mask)
    assert oracle.object_pixels == total
    assert oracle.recall(box) == pytest.approx(inside / total if total else 0.0)


def test_ignored_pixels_count_neither_as_object_nor_as_background() -> None:
    mask = np.array([[MASK_OBJECT, MASK_IGNORE, MASK_IGNORE, MASK_BACKGROUND]], dtype=np.uint8)
    oracle = CoverageOracle(mask)
    assert oracle.coverage(Box(0, 0, 4, 1)) == pytest.approx(0.5)
    assert oracle.coverage(Box(1, 0, 3, 1)) == 0.0


# -- drawing workers ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(share=st.floats(0, 1), count=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_draw_workers_makes_the_configured_share_of_spammers_deterministically(share, count, seed) -> None:
    config = SimulationConfig(spammers=share)
    workers = draw_workers(config, count, np.random.default_rng(seed))
    assert len(workers) == count
    assert len({w.external_id for w in workers}) == count
    spammers = [w for w in workers if w.kind != "honest"]
    assert len(spammers) == round(share * count)
    assert all(w.kind in ("random", "always_yes") for w in spammers)
    assert all(w.speed == SPAMMER_SPEED for w in spammers)
    for worker in workers:
        assert config.threshold_low <= worker.threshold <= config.threshold_high
        assert 0 <= worker.error_rate <= 0.5
        assert worker.speed > 0
    assert draw_workers(config, count, np.random.default_rng(seed)) == workers


def test_drawn_workers_survive_a_round_trip_through_their_stored_attributes() -> None:
    for worker in draw_workers(SimulationConfig(spammers=0.5), 6, np.random.default_rng(0), start=10):
        assert SimulatedWorker.from_attributes(worker.as_attributes()) == worker
    assert draw_workers(SimulationConfig(), 2, np.random.default_rng(0), start=10)[0].external_id == "sim-0010"


def test_spammers_alternate_between_random_and_always_yes() -> None:
    workers = draw_workers(SimulationConfig(spammers=0.3), 20, np.random.default_rng(0))
    kinds = [w.kind for w in workers if w.kind != "honest"]
    assert abs(kinds.count("random") - kinds.count("always_yes")) <= 1, kinds


# -- answering ---------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(coverage=st.floats(0, 1), threshold=st.floats(0, 1), seed=st.integers(0, 1000))
def test_a_noiseless_honest_worker_says_yes_exactly_when_coverage_reaches_its_threshold(
    coverage, threshold, seed
) -> None:
    worker = honest(threshold)
    assert answer_window(worker, coverage, np.random.default_rng(seed)) == (coverage >= threshold)


def test_an_honest_worker_flips_about_its_error_rate() -> None:
    rng = np.random.default_rng(0)
    worker = honest(threshold=0.2, error_rate=0.1)
    flips = sum(not answer_window(worker, 0.9, rng) for _ in range(4000))
    assert 0.08 <= flips / 4000 <= 0.12


def test_spammers_answer_without_looking() -> None:
    rng = np.random.default_rng(0)
    always_yes = SimulatedWorker("sim-y", "always_yes", 0.2, 0.0, SPAMMER_SPEED)
    assert all(answer_window(always_yes, coverage, rng) for coverage in np.linspace(0, 1, 50))
    random = SimulatedWorker("sim-r", "random", 0.2, 0.0, SPAMMER_SPEED)
    yes = sum(answer_window(random, 0.0, rng) for _ in range(4000))
    assert 0.45 <= yes / 4000 <= 0.55


@settings(max_examples=60, deadline=None)
@given(coverages=st.lists(st.floats(0, 1), max_size=64), threshold=st.floats(0.01, 1))
def test_a_noiseless_worker_clicks_exactly_the_grid_cells_reaching_its_threshold(coverages, threshold) -> None:
    clicked = answer_grid(honest(threshold), coverages, np.random.default_rng(0))
    assert clicked == [i for i, coverage in enumerate(coverages) if coverage >= threshold]


def test_always_yes_clicks_every_grid_cell() -> None:
    worker = SimulatedWorker("sim-y", "always_yes", 0.2, 0.0, SPAMMER_SPEED)
    assert answer_grid(worker, [0.0] * 16, np.random.default_rng(0)) == list(range(16))


# -- the human time model ----------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [0.4, 1.0, 1.7])
@pytest.mark.parametrize("action", ["yes_no", "grid_8x8", "polygon"])
def test_answer_times_have_the_time_model_median_scaled_by_worker_speed(speed: float, action: str) -> None:
    model = TimeModel()
    median = {"yes_no": model.yes_no, "grid_8x8": model.grid_median(64), "polygon": model.polygon}[action]
    rng = np.random.default_rng(1234)
    seconds = np.array([answer_seconds(median, honest(speed=speed), model, rng) for _ in range(3000)])
    assert (seconds > 0).all()
    assert np.median(seconds) == pytest.approx(median * speed, rel=0.06)
    # Lognormal spread: the log-times have the model's sigma.
    assert np.log(seconds).std() == pytest.approx(model.sigma, rel=0.1)


def test_grid_screens_cost_the_base_time_plus_each_cell_beyond_sixteen() -> None:
    model = TimeModel()
    assert model.grid_median(9) == pytest.approx(10.3)
    assert model.grid_median(16) == pytest.approx(10.3)
    assert model.grid_median(64) == pytest.approx(10.3 + 48 * 0.64)


# -- how many votes, and what they decide --------------------------------------------------------------


def answers_until_done(stream: list[str], votes: int = 3, early_stop: bool = True) -> list[str]:
    """Feed answers one by one the way the planner does, until the question has what it needs."""
    values: list[str] = []
    for value in stream:
        if len(values) >= votes_target(values, votes, early_stop):
            break
        values.append(value)
    return values


def test_two_agreeing_answers_close_a_question() -> None:
    assert answers_until_done([YES, YES, NO]) == [YES, YES]
    assert answers_until_done([NO, NO, YES]) == [NO, NO]


def test_a_disagreement_asks_for_the_third_answer() -> None:
    assert answers_until_done([YES, NO, NO, YES]) == [YES, NO, NO]
    assert answers_until_done([NO, YES, YES, YES]) == [NO, YES, YES]


def test_votes_target_without_early_stop_or_with_few_votes() -> None:
    assert votes_target([], 3, True) == 2
    assert votes_target([YES], 3, True) == 2
    assert votes_target([YES, YES], 5, True) == 2
    assert votes_target([YES, NO], 5, True) == 5
    assert votes_target([YES, YES], 3, False) == 3
    assert votes_target([], 1, True) == 1
    assert votes_target([], 2, True) == 2


@pytest.mark.parametrize(
    "values, decision",
    [
        ([YES], YES),
        ([NO], NO),
        ([YES, NO], YES),
        ([NO, YES], YES),
        ([YES, YES, NO], YES),
        ([NO, NO, YES], NO),
        ([], YES),
    ],
)
def test_majority_breaks_ties_towards_yes_so_the_window_is_refined(values: list[str], decision: str) -> None:
    assert majority(values) == decision


@pytest.mark.parametrize("kind", ["patch", "verify", "gold"])
def test_yes_no_answers_are_accepted_and_anything_else_rejected(kind: str) -> None:
    assert validate_answer(kind, YES, None) == YES
    assert validate_answer(kind, NO, None) == NO
    for bad in ("Yes", "maybe", "", True, 1, None, {"cells": []}):
        with pytest.raises(AnswerRejected):
            validate_answer(kind, bad, None)


def test_a_grid_answer_is_normalized_to_sorted_unique_cells() -> None:
    assert validate_answer("grid", {"cells": [5, 0, 5, 63]}, 8) == {"cells": [0, 5, 63]}
    assert validate_answer("grid", {"cells": []}, 8) == {"cells": []}


@pytest.mark.parametrize(
    "value",
    [
        YES,
        None,
        [],
        {"cells": None},
        {"cells": "1,2"},
        {"cells": [1.0]},
        {"cells": ["1"]},
        {"cells": [True]},
        {"clicks": [1]},
    ],
)
def test_malformed_grid_answers_are_rejected(value) -> None:
    with pytest.raises(AnswerRejected):
        validate_answer("grid", value, 4)


@pytest.mark.parametrize("cells", [[-1], [16], [0, 99]])
def test_grid_cells_outside_the_grid_are_rejected(cells: list[int]) -> None:
    with pytest.raises(AnswerRejected, match="outside"):
        validate_answer("grid", {"cells": cells}, 4)


def test_a_rejected_answer_is_a_value_error() -> None:
    assert issubclass(AnswerRejected, ValueError)


# -- gold --------------------------------------------------------------------------------------------


@st.composite
def object_masks(draw):
    height, width = draw(st.integers(16, 96)), draw(st.integers(16, 96))
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    mask[y0:y1, x0:x1] = MASK_OBJECT
    return mask


@settings(max_examples=40, deadline=None)
@given(mask=object_masks(), per_image=st.integers(1, 8), seed=st.integers(0, 1000))
def test_gold_windows_are_clear_cases(mask: np.ndarray, per_image: int, seed: int) -> None:
    chosen = gold_windows(mask, np.random.default_rng(seed), per_image)
    oracle = CoverageOracle(mask)
    height, width = mask.shape
    assert len(chosen) <= per_image
    assert len(set(box for box, _ in chosen)) == len(chosen)
    for box, answer in chosen:
        assert Box.whole(width, height).contains(box)
        assert min(box.width, box.height) >= 4
        if answer == YES:
            assert oracle.coverage(box) >= GOLD_YES_COVERAGE
        else:
            assert answer == NO
            assert oracle.coverage(box) == 0.0
    assert gold_windows(mask, np.random.default_rng(seed), per_image) == chosen


def test_gold_windows_mix_yes_and_no_when_both_exist() -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :32] = MASK_OBJECT
    answers = [answer for _, answer in gold_windows(mask, np.random.default_rng(0), per_image=4)]
    assert answers == [YES, NO, YES, NO]


def test_an_image_whose_truth_holds_no_object_gives_no_gold() -> None:
    # More often a mask read or drawn wrong than a photo without the target: "no" gold would ban honest workers.
    mask = np.zeros((64, 64), dtype=np.uint8)
    assert gold_windows(mask, np.random.default_rng(0), per_image=3) == []


def test_a_window_with_only_ignored_pixels_never_becomes_gold() -> None:
    mask = np.full((64, 64), MASK_IGNORE, dtype=np.uint8)
    assert gold_windows(mask, np.random.default_rng(0), per_image=2) == []
