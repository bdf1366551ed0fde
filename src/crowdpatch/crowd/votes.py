"""How many answers a question wants, in Python and in SQL side by side, and what yes/no answers decide.

The dispatchers hand a question out while its answers and leases are below what it wants, and the
policies close it once its answers reach it. :func:`votes_target` (Python, over the answers) and
:func:`wanted_sql` (SQL, over the task row's counters) are the same rule and must stay in step: a
policy that wants a different number of answers changes both, and keeps on the task row whatever
its rule reads (as ``answers_disagree``, :func:`first_two_disagree`, is kept for early stop).
"""

from __future__ import annotations

from typing import Any

from crowdpatch.crowd.kinds import NO, YES


def votes_target(values: list[Any], votes: int, early_stop: bool) -> int:
    """Answers a question needs given those it has: 2 while the first two agree (or are not in yet)."""
    if not early_stop or votes <= 2:
        return votes
    if first_two_disagree(values):
        return votes
    return 2


def wanted_sql(early_stop: bool, task: str = "t") -> str:
    """:func:`votes_target` in SQL over the row ``task`` (its ``votes_wanted`` and ``answers_disagree``)."""
    if not early_stop:
        return f"{task}.votes_wanted"
    return f"(CASE WHEN {task}.votes_wanted <= 2 OR {task}.answers_disagree THEN {task}.votes_wanted ELSE 2 END)"


def first_two_disagree(values: list[Any]) -> bool:
    """What the task row keeps as ``answers_disagree``, for :func:`wanted_sql`."""
    return len(values) >= 2 and values[0] != values[1]


def majority(values: list[str]) -> str:
    """Majority of yes/no answers; a tie is "yes" so the window is refined rather than lost."""
    yes = sum(1 for v in values if v == YES)
    return YES if yes * 2 >= len(values) else NO
