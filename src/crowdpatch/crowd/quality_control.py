"""Live quality control: what one answer says about its worker, and when the worker is stopped.

Shared by the in-process planner and the server's store-backed planner, so simulated and real
workers are judged by the same rules.
"""

from __future__ import annotations

import math
from typing import Any

from crowdpatch.config import CrowdConfig
from crowdpatch.store.models import WorkerRow


def is_spammer(correct: int, seen: int, crowd: CrowdConfig, miss_rate: float = 0.1) -> bool:
    """Wald's sequential probability ratio test on gold answers: spammer accuracy vs honest accuracy.

    A fixed "accuracy below X after N golds" rule bans many honest workers on an early unlucky
    streak; the SPRT bans only when the evidence reaches the odds set by ``false_ban_rate``,
    after as few golds as the evidence allows.
    """
    spam, honest = crowd.spammer_gold_accuracy, crowd.honest_gold_accuracy
    wrong = seen - correct
    log_ratio = correct * math.log(spam / honest) + wrong * math.log((1 - spam) / (1 - honest))
    return log_ratio >= math.log((1 - miss_rate) / crowd.false_ban_rate)


def record_answer_quality(
    worker: WorkerRow, kind: str, gold_answer: Any, value: Any, seconds: float, crowd: CrowdConfig, answers_so_far: int | None = None
) -> bool:
    """Update the worker's gold and speed counters; returns True when this answer gets it stopped.

    ``answers_so_far`` (this one included) enables the too-fast rule; the in-process simulator,
    whose times are modeled, leaves it out.
    """
    if seconds < crowd.min_seconds_per_answer:
        worker.too_fast = (worker.too_fast or 0) + 1
    if kind == "gold":
        worker.gold_seen = (worker.gold_seen or 0) + 1
        worker.gold_correct = (worker.gold_correct or 0) + int(value == gold_answer)
        worker.quality = (worker.gold_correct + 1) / (worker.gold_seen + 2)
        if not worker.banned and is_spammer(worker.gold_correct, worker.gold_seen, crowd):
            worker.banned, worker.stopped_reason = True, "gold"
            return True
    if not worker.banned and answers_so_far is not None and answers_so_far >= crowd.too_fast_min_answers:
        if (worker.too_fast or 0) >= crowd.too_fast_stop_share * answers_so_far:
            worker.banned, worker.stopped_reason = True, "too_fast"
            return True
    return False
