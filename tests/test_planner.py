"""The fixed question scheme: what a worker is asked next and what each answer decides.

Driven through the library API (Project.create, add_images, propose, MemoryDispatcher) on small
built-in projects, with several workers interleaving their requests as real ones would.
"""

from __future__ import annotations

from collections import Counter
from itertools import count
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from sqlalchemy import func, select

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.dispatch.memory import MemoryDispatcher, SimulatedClock
from crowdpatch.crowd.dispatch.rules import AnswerRejected, Assignment, StoredAnswer
from crowdpatch.crowd.kinds import task_priority
from crowdpatch.crowd.votes import votes_target
from crowdpatch.patches.lattice import WindowKey, children
from crowdpatch.project import Project
from crowdpatch.store.models import AnswerRow, ImageRow, RegionRow, TaskRow, WorkerRow

NOW = 1000.0
_client_ids = count()


@pytest.fixture
def make_project(make_project):
    """These tests exercise the window lattice: 'single' presentation unless a test configures otherwise."""

    def make(*args, configure=None, **kwargs):
        def single_then(config: ProjectConfig) -> None:
            config.patches.presentation = "single"
            if configure is not None:
                configure(config)

        return make_project(*args, configure=single_then, **kwargs)

    return make


def no_gold(config: ProjectConfig) -> None:
    config.crowd.gold_rate = 0.0


def whole_image_regions(config: ProjectConfig) -> None:
    """No saliency cluster survives, so every image starts at step 2 on the whole image."""
    no_gold(config)
    config.saliency.min_area = 2.0


def add_workers(project: Project, n: int) -> list[int]:
    with project.sessions.begin() as session:
        rows = [WorkerRow(project_id=project.id, platform="local", external_id=f"w{i}") for i in range(n)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def make_planner(project: Project, seed: int = 0) -> MemoryDispatcher:
    return MemoryDispatcher(
        project.sessions, project.id, project.config, np.random.default_rng(seed), SimulatedClock(NOW)
    )


def ask(planner: MemoryDispatcher, worker: int, at: float) -> Assignment | None:
    """The worker asks for its next question at time ``at``."""
    planner.clock.now = at
    return planner.next_task(worker)


def submit(
    planner: MemoryDispatcher, worker: int, task_id: int, value: Any, client_id: str | None = None
) -> StoredAnswer:
    return planner.submit(
        worker,
        task_id,
        value,
        client_id=client_id or f"c{next(_client_ids)}",
        seconds=1.6,
        time_source="modeled",
    )


def decide(
    planner: MemoryDispatcher, workers: Iterator[int], values: list[Any]
) -> tuple[Assignment, list[StoredAnswer]]:
    """Fresh workers all take the front question of the queue, then answer ``values`` in order."""
    takers = [next(workers) for _ in values]
    assignments = [planner.next_task(worker) for worker in takers]
    assert all(a is not None and a.task_id == assignments[0].task_id for a in assignments), assignments
    return assignments[0], [submit(planner, w, assignments[0].task_id, v) for w, v in zip(takers, values)]


def task_row(project: Project, task_id: int) -> TaskRow:
    with project.sessions() as session:
        return session.get(TaskRow, task_id)


def answers_of(project: Project, task_id: int) -> int:
    with project.sessions() as session:
        return session.scalar(select(func.count()).select_from(AnswerRow).where(AnswerRow.task_id == task_id))


def tasks_where(project: Project, *conditions) -> list[TaskRow]:
    with project.sessions() as session:
        return list(
            session.scalars(select(TaskRow).where(TaskRow.project_id == project.id, *conditions).order_by(TaskRow.id))
        )


# -- order -----------------------------------------------------------------------------------------


def test_verification_questions_are_leased_before_any_patch_question(make_project) -> None:
    project = make_project(configure=no_gold)
    verify = tasks_where(project, TaskRow.kind == "verify")
    assert verify, "the built-in benchmark should give saliency clusters to verify"
    workers = add_workers(project, 8)
    planner = make_planner(project)
    leased: list[tuple[int, Assignment]] = []
    for _ in range(10):
        for worker in workers:
            assignment = planner.next_task(worker)
            if assignment is not None:
                leased.append((worker, assignment))
    kinds = [a.kind for _, a in leased]
    assert kinds.count("verify") == 2 * len(verify), "with no answer yet a question wants the 2 votes of an early stop"
    assert kinds == sorted(kinds, key=lambda kind: kind != "verify"), (
        "a patch question was leased before a verification"
    )

    for worker, assignment in leased:
        submit(planner, worker, assignment.task_id, "yes")
    assert all(t.state == "done" for t in tasks_where(project, TaskRow.kind == "verify"))
    after = [a for a in (planner.next_task(worker) for worker in workers) if a is not None]
    assert after and all(a.kind == "patch" and planner.open[a.task_id].level == 1 for a in after)


def test_a_lease_is_the_first_question_in_order_the_worker_has_not_seen(make_project) -> None:
    """Verification first, then patch questions level by level, under random interleaving."""
    project = make_project(configure=no_gold)
    workers = add_workers(project, 6)
    planner = make_planner(project)
    rng = np.random.default_rng(3)
    in_hand: dict[int, Assignment] = {}
    levels_leased = set()
    for _ in range(1500):
        worker = workers[int(rng.integers(len(workers)))]
        if worker in in_hand:
            submit(planner, worker, in_hand.pop(worker).task_id, "yes" if rng.random() < 0.6 else "no")
            continue
        wanting = [
            q.order
            for q in planner.open.values()
            if not q.has_seen(worker)
            and len(q.answers) + len(q.leases) < votes_target([v for _, v in q.answers], q.votes_wanted, True)
        ]
        assignment = planner.next_task(worker)
        if assignment is None:
            assert wanting == []
            continue
        in_hand[worker] = assignment
        question = planner.open[assignment.task_id]
        assert question.order == min(wanting), "a question earlier in (verify, level, id) order was passed over"
        levels_leased.add((question.kind, question.level))
    assert ("patch", 2) in levels_leased, "the walk should reach level 2"


# -- votes -----------------------------------------------------------------------------------------


def test_a_worker_never_gets_the_same_question_twice(make_project) -> None:
    def frequent_gold(config: ProjectConfig) -> None:
        config.crowd.gold_rate = 0.3

    project = make_project(configure=frequent_gold)
    (worker,) = add_workers(project, 1)
    planner = make_planner(project)
    gold = {t.id: t.gold_answer for t in tasks_where(project, TaskRow.kind == "gold")}
    seen = []
    clock = NOW
    while (assignment := ask(planner, worker, at=clock)) is not None:
        seen.append(assignment.task_id)
        submit(planner, worker, assignment.task_id, gold.get(assignment.task_id, "yes"))
        clock += 10 * project.config.crowd.lease_seconds  # every lease ever handed out has expired
    assert len(seen) == len(set(seen))
    assert set(seen) & set(gold) and set(seen) - set(gold), "the walk should cover gold and ordinary questions"
    # One worker's answers alone never finish a question: each still waits for a second voice.
    assert all(len(q.answers) == 1 for q in planner.open.values() if q.id in seen)


def test_two_agreeing_answers_finish_a_question(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    workers = iter(add_workers(project, 4))
    assignment, results = decide(planner, workers, ["yes", "yes"])
    assert assignment.kind == "verify"
    assert [r.task_done for r in results] == [False, True]
    row = task_row(project, assignment.task_id)
    assert row.state == "done" and row.decision == "yes" and row.votes_wanted == 3
    assert assignment.task_id not in planner.open
    third = next(workers)
    assert planner.next_task(third).task_id != assignment.task_id
    assert answers_of(project, assignment.task_id) == 2


def test_a_disagreement_asks_for_a_third_answer(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    workers = iter(add_workers(project, 4))
    assignment, results = decide(planner, workers, ["yes", "no"])
    assert not any(r.task_done for r in results)
    assert task_row(project, assignment.task_id).state == "open"
    third = next(workers)
    assert planner.next_task(third).task_id == assignment.task_id
    result = submit(planner, third, assignment.task_id, "no")
    assert result.task_done
    row = task_row(project, assignment.task_id)
    assert row.state == "done" and row.decision == "no"
    assert answers_of(project, assignment.task_id) == 3


def test_concurrent_workers_never_over_ask_a_question(make_project) -> None:
    """Many workers interleave requests and answers; leases expire and some answers come late."""
    project = make_project(configure=no_gold)
    workers = add_workers(project, 12)
    planner = make_planner(project)
    rng = np.random.default_rng(7)

    def check() -> None:
        for q in planner.open.values():
            assert len(q.answers) + len(q.leases) <= q.votes_wanted, (q.id, q.answers, q.leases)

    in_hand: dict[int, list[Assignment]] = {w: [] for w in workers}
    clock = NOW
    # Everyone asks, several times, before anybody answers.
    for _ in range(3):
        for worker in workers:
            assignment = ask(planner, worker, at=clock)
            if assignment is not None:
                in_hand[worker].append(assignment)
            check()
    late_rejected = 0
    for _ in range(3000):
        clock += float(rng.exponential(project.config.crowd.lease_seconds / 20))
        worker = workers[int(rng.integers(len(workers)))]
        if in_hand[worker] and rng.random() < 0.5:
            assignment = in_hand[worker].pop(int(rng.integers(len(in_hand[worker]))))
            try:
                submit(planner, worker, assignment.task_id, "yes" if rng.random() < 0.5 else "no")
            except AnswerRejected:
                late_rejected += 1
        else:
            assignment = ask(planner, worker, at=clock)
            if assignment is not None:
                in_hand[worker].append(assignment)
        check()
    with project.sessions() as session:
        per_task = session.execute(
            select(TaskRow.votes_wanted, func.count(AnswerRow.id)).join(AnswerRow).group_by(TaskRow.id)
        ).all()
        pairs = session.execute(select(AnswerRow.task_id, AnswerRow.worker_id)).all()
    assert per_task and all(n <= wanted for wanted, n in per_task)
    assert len(pairs) == len(set(pairs))


# -- what an answer creates ------------------------------------------------------------------------


def test_a_yes_window_creates_its_children_once_and_a_no_none(make_project, database) -> None:
    """On both backends (PostgreSQL inserts the children in one statement of JSON rows, SQLite row by row)."""

    def configure(config: ProjectConfig) -> None:
        whole_image_regions(config)
        config.db_url = database

    project = make_project(configure=configure)
    planner = make_planner(project)
    workers = iter(add_workers(project, 12))

    first, results = decide(planner, workers, ["yes", "yes"])
    row = task_row(project, first.task_id)
    assert (row.kind, row.key) == ("patch", "1:0:0")
    assert results[-1].created_tasks == 9
    kids = tasks_where(project, TaskRow.parent_id == first.task_id)
    assert sorted(t.key for t in kids) == sorted(str(k) for k in children(WindowKey(1, 0, 0)))
    assert all(t.level == 2 and t.state == "open" and t.region_id == row.region_id for t in kids)
    # Every column as the ORM would have filled it in: defaults, counters, the reason and the window's pixels.
    for kid in kids:
        assert (kid.kind, kid.image_id, kid.votes_wanted) == ("patch", row.image_id, row.votes_wanted)
        assert kid.priority == task_priority("patch")
        assert (kid.answers_count, kid.leases_count, kid.answers_disagree, kid.decision) == (0, 0, False, None)
        assert kid.reason == f"level 2: child of window {row.key} voted yes" and kid.created_at is not None
        assert Box.from_list(kid.box).area > 0 and kid.box != row.box

    neighbour, results = decide(planner, workers, ["yes", "yes"])
    assert task_row(project, neighbour.task_id).key == "1:1:0"
    # Its children in column 2 are the first window's right column: asked once, not twice.
    assert results[-1].created_tasks == 6
    level_two = tasks_where(project, TaskRow.region_id == row.region_id, TaskRow.level == 2)
    keys = [t.key for t in level_two]
    assert len(keys) == len(set(keys)) == 15
    assert {"2:2:0", "2:2:1", "2:2:2"} <= set(keys)

    rejected, results = decide(planner, workers, ["no", "no"])
    assert task_row(project, rejected.task_id).key == "1:2:0"
    assert results[-1].created_tasks == 0
    assert tasks_where(project, TaskRow.parent_id == rejected.task_id) == []


def test_a_yes_at_the_maximum_depth_creates_nothing(make_project) -> None:
    def depth_one(config: ProjectConfig) -> None:
        whole_image_regions(config)
        config.patches.max_depth = 1

    project = make_project(configure=depth_one)
    planner = make_planner(project)
    assignment, results = decide(planner, iter(add_workers(project, 2)), ["yes", "yes"])
    assert results[-1].task_done and results[-1].created_tasks == 0
    assert tasks_where(project, TaskRow.level == 2) == []


def on(database: str | None) -> Callable[[ProjectConfig], None]:
    """No gold questions, the project's store on ``database`` (the ``database`` fixture's URL; None: SQLite)."""

    def configure(config: ProjectConfig) -> None:
        no_gold(config)
        config.db_url = database

    return configure


def test_all_clusters_rejected_gives_a_whole_image_region_with_level_one_questions(make_project, database) -> None:
    project = make_project(configure=on(database))
    planner = make_planner(project)
    workers = iter(add_workers(project, 40))
    first = tasks_where(project, TaskRow.kind == "verify")[0]
    image_id = first.image_id
    clusters = tasks_where(project, TaskRow.kind == "verify", TaskRow.image_id == image_id)
    for _ in clusters:
        assignment, results = decide(planner, workers, ["no", "no"])
        assert assignment.kind == "verify" and assignment.image_id == image_id
    assert results[-1].created_tasks == 9

    with project.sessions() as session:
        image = session.get(ImageRow, image_id)
        regions = session.scalars(select(RegionRow).where(RegionRow.image_id == image_id).order_by(RegionRow.id)).all()
        assert image.stage == "patch"
        assert [r.verdict for r in regions[:-1]] == ["rejected"] * len(clusters)
        whole = regions[-1]
        assert (whole.source, whole.verdict, whole.box) == ("whole", "accepted", [0, 0, image.width, image.height])
    level_one = tasks_where(project, TaskRow.region_id == whole.id)
    assert sorted(t.key for t in level_one) == sorted(f"1:{ix}:{iy}" for ix in range(3) for iy in range(3))
    assert all(t.kind == "patch" and t.state == "open" for t in level_one)


def test_an_accepted_cluster_becomes_the_region_asked_about(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    workers = iter(add_workers(project, 40))
    image_id = tasks_where(project, TaskRow.kind == "verify")[0].image_id
    clusters = tasks_where(project, TaskRow.kind == "verify", TaskRow.image_id == image_id)
    for i, _ in enumerate(clusters):
        decide(planner, workers, ["yes", "yes"] if i == 0 else ["no", "no"])
    with project.sessions() as session:
        regions = session.scalars(select(RegionRow).where(RegionRow.image_id == image_id).order_by(RegionRow.id)).all()
    assert [r.source for r in regions] == ["saliency"] * len(clusters), "no whole-image region when one is accepted"
    assert regions[0].verdict == "accepted"
    assert len(tasks_where(project, TaskRow.region_id == regions[0].id, TaskRow.kind == "patch")) == 9


def test_accepted_clusters_that_overlap_are_asked_about_once_as_their_union(make_project, database) -> None:
    """Saliency often splits one object into touching clusters: their lattices would ask the shared area twice."""
    project = make_project(configure=on(database))
    planner = make_planner(project)
    workers = iter(add_workers(project, 200))
    image_id = next(
        image
        for image, clusters in Counter(t.image_id for t in tasks_where(project, TaskRow.kind == "verify")).items()
        if clusters >= 2
    )
    clusters = tasks_where(project, TaskRow.kind == "verify", TaskRow.image_id == image_id)
    with project.sessions.begin() as session:
        image = session.get(ImageRow, image_id)
        width, height = image.width, image.height
        first, second = (session.get(RegionRow, c.region_id) for c in clusters[:2])
        first.box = [0, 0, width // 2 + 4, height // 2 + 4]
        second.box = [width // 2 - 4, height // 2 - 4, width, height]
    accepted, undecided = {clusters[0].id, clusters[1].id}, {c.id for c in clusters}
    while undecided:  # every verification in the order they are handed out: "no" but to the two
        takers = [next(workers), next(workers)]
        task_id = planner.next_task(takers[0]).task_id
        assert planner.next_task(takers[1]).task_id == task_id
        for worker in takers:
            submit(planner, worker, task_id, "yes" if task_id in accepted else "no")
        undecided.discard(task_id)

    with project.sessions() as session:
        regions = session.scalars(select(RegionRow).where(RegionRow.image_id == image_id).order_by(RegionRow.id)).all()
        stage = session.get(ImageRow, image_id).stage
    verdicts = {r.id: r.verdict for r in regions}
    assert verdicts[clusters[0].region_id] == verdicts[clusters[1].region_id] == "merged"
    assert all(verdicts[c.region_id] == "rejected" for c in clusters[2:])
    union = regions[-1]
    assert (union.source, union.verdict, union.box) == ("merged", "accepted", [0, 0, width, height])
    assert stage == "patch"
    asked = tasks_where(project, TaskRow.image_id == image_id, TaskRow.kind == "patch")
    assert len(asked) == 9 and {t.region_id for t in asked} == {union.id}


# -- rejected and repeated answers -----------------------------------------------------------------


def test_an_answer_from_a_worker_never_leased_the_task_is_rejected(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    holder, other = add_workers(project, 2)
    assignment = planner.next_task(holder)
    with pytest.raises(AnswerRejected):
        submit(planner, other, assignment.task_id, "yes")
    assert answers_of(project, assignment.task_id) == 0


def test_answers_to_unknown_tasks_malformed_or_repeated_are_rejected(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    (holder,) = add_workers(project, 1)
    assignment = planner.next_task(holder)
    with pytest.raises(AnswerRejected):
        submit(planner, holder, 10**9, "yes")
    with pytest.raises(AnswerRejected):
        submit(planner, holder, assignment.task_id, "maybe")
    assert answers_of(project, assignment.task_id) == 0
    submit(planner, holder, assignment.task_id, "yes")
    with pytest.raises(AnswerRejected):
        submit(planner, holder, assignment.task_id, "no")
    assert answers_of(project, assignment.task_id) == 1


def test_a_late_answer_is_rejected_once_others_filled_the_question(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    late, slow, c, d = add_workers(project, 4)
    assignment = planner.next_task(late)
    assert planner.next_task(slow).task_id == assignment.task_id
    expired = NOW + project.config.crowd.lease_seconds + 1
    # Both leases have expired: the question goes to the next workers who ask.
    assert ask(planner, c, at=expired).task_id == assignment.task_id
    assert ask(planner, d, at=expired).task_id == assignment.task_id
    submit(planner, c, assignment.task_id, "yes")
    assert submit(planner, d, assignment.task_id, "yes").task_done
    for worker in (late, slow):
        with pytest.raises(AnswerRejected):
            submit(planner, worker, assignment.task_id, "no")
    assert answers_of(project, assignment.task_id) == 2


def test_the_same_client_id_twice_is_one_answer(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    worker, other = add_workers(project, 2)
    assignment = planner.next_task(worker)
    first = submit(planner, worker, assignment.task_id, "yes", client_id="retry-1")
    again = submit(planner, worker, assignment.task_id, "yes", client_id="retry-1")
    assert not first.duplicate and again.duplicate
    assert again.answer_id == first.answer_id
    assert answers_of(project, assignment.task_id) == 1
    with pytest.raises(AnswerRejected):
        submit(planner, other, assignment.task_id, "yes", client_id="retry-1")


def test_a_worker_failing_gold_is_banned_and_gets_no_more_tasks(make_project) -> None:
    def all_gold(config: ProjectConfig) -> None:
        config.crowd.gold_rate = 1.0

    project = make_project(configure=all_gold)
    cheat, honest = add_workers(project, 2)
    planner = make_planner(project)
    gold = {t.id: t.gold_answer for t in tasks_where(project, TaskRow.kind == "gold")}
    assert len(gold) >= 10

    results: list[StoredAnswer] = []
    while not (results and results[-1].worker_stopped):
        assert len(results) < 10, "ten wrong gold answers in a row and still not banned"
        assignment = planner.next_task(cheat)
        assert assignment is not None and assignment.task_id in gold
        assert assignment.kind == "patch", "gold is presented as an ordinary patch"
        results.append(submit(planner, cheat, assignment.task_id, "no" if gold[assignment.task_id] == "yes" else "yes"))
    assert len(results) >= 2, "one wrong gold answer is no evidence"
    assert planner.next_task(cheat) is None
    assert make_planner(project).next_task(cheat) is None, "the ban is in the store, not only in memory"
    with project.sessions() as session:
        row = session.get(WorkerRow, cheat)
        assert row.banned and row.gold_seen == len(results) and row.gold_correct == 0

    for _ in range(len(results) + 2):
        assignment = planner.next_task(honest)
        assert not submit(planner, honest, assignment.task_id, gold[assignment.task_id]).worker_stopped
    assert planner.next_task(honest) is not None


def test_a_banned_workers_answers_stop_counting(make_project) -> None:
    project = make_project(configure=no_gold)
    planner = make_planner(project)
    spammer, a, b = add_workers(project, 3)
    assignment = planner.next_task(spammer)
    submit(planner, spammer, assignment.task_id, "yes")
    with project.sessions.begin() as session:
        session.get(WorkerRow, spammer).banned = True
    planner = make_planner(project)
    assert planner.next_task(a).task_id == assignment.task_id
    assert planner.next_task(b).task_id == assignment.task_id, "the banned worker's vote no longer counts"


# -- grid presentation -----------------------------------------------------------------------------


def test_grid_presentation_asks_one_grid_screen_answered_with_cells(make_project) -> None:
    def grid(config: ProjectConfig) -> None:
        whole_image_regions(config)
        config.patches.presentation = "grid"

    project = make_project(configure=grid)
    planner = make_planner(project)
    first_worker, second_worker = add_workers(project, 2)
    assignment = planner.next_task(first_worker)
    assert assignment.kind == "grid" and assignment.grid_size == 8
    assert "cell" in assignment.question.lower()
    region_tasks = tasks_where(project, TaskRow.image_id == assignment.image_id, TaskRow.kind != "gold")
    assert [t.kind for t in region_tasks] == ["grid"]

    for bad in ("yes", {"cells": [64]}, {"cells": ["a"]}, {"clicked": [1]}):
        with pytest.raises(AnswerRejected):
            submit(planner, first_worker, assignment.task_id, bad)
    submit(planner, first_worker, assignment.task_id, {"cells": [9, 1, 9]})
    assert planner.next_task(second_worker).task_id == assignment.task_id
    result = submit(planner, second_worker, assignment.task_id, {"cells": [1, 9]})
    assert result.task_done and result.created_tasks == 0
    with project.sessions() as session:
        values = session.scalars(select(AnswerRow.value).where(AnswerRow.task_id == assignment.task_id)).all()
        assert values == [{"cells": [1, 9]}, {"cells": [1, 9]}]
        assert session.get(ImageRow, assignment.image_id).stage == "done"
