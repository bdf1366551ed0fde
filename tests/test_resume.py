"""A run killed mid-way resumes from the store without asking an answered question again.

The kill is real: ``python -m crowdpatch simulate`` in a subprocess, SIGKILL while it writes.
The store is read with plain read-only sqlite3 queries, as an outside observer would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import pytest

from crowdpatch.boxes import Box
from crowdpatch.config import load_config
from crowdpatch.crowd.votes import votes_target
from crowdpatch.patches.lattice import WindowKey, can_subdivide, children
from crowdpatch.simulate.run import run_simulation

KILL_AFTER_ANSWERS = 150


def read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def answer_count(db: Path) -> int:
    with closing(read_only(db)) as connection:
        return connection.execute("SELECT count(*) FROM answer").fetchone()[0]


def answers(db: Path) -> dict[int, tuple]:
    """Answer id -> every stored field of that answer."""
    with closing(read_only(db)) as connection:
        rows = connection.execute(
            "SELECT id, task_id, worker_id, value, client_id, shown_at, answered_at, seconds, time_source FROM answer"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def task_states(db: Path) -> dict[int, str]:
    with closing(read_only(db)) as connection:
        return dict(connection.execute("SELECT id, state FROM task WHERE kind != 'gold'").fetchall())


def check_store_consistent(db: Path, *, early_stop: bool = True) -> dict[str, int]:
    """The invariants that must hold at any instant, even right after a SIGKILL; returns a few counts."""
    with closing(read_only(db)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        twice = connection.execute(
            "SELECT task_id, worker_id, count(*) FROM answer GROUP BY task_id, worker_id HAVING count(*) > 1"
        ).fetchall()
        assert twice == [], f"(task, worker) answered more than once: {twice}"

        banned = {row[0] for row in connection.execute("SELECT id FROM worker WHERE banned")}
        tasks = {
            row[0]: row[1:]
            for row in connection.execute(
                "SELECT id, kind, state, decision, votes_wanted, region_id, key, level, image_id"
                " FROM task WHERE kind != 'gold'"
            )
        }
        votes: dict[int, list[str]] = defaultdict(list)
        for task_id, worker_id, value in connection.execute("SELECT task_id, worker_id, value FROM answer ORDER BY id"):
            if task_id in tasks and worker_id not in banned:
                votes[task_id].append(json.loads(value))
        regions = {
            row[0]: Box.from_list(json.loads(row[1])) for row in connection.execute("SELECT id, box FROM region")
        }
        keys_per_region: dict[int, set[str]] = defaultdict(set)
        for region_id, key in connection.execute("SELECT region_id, key FROM task WHERE kind = 'patch'"):
            keys_per_region[region_id].add(key)
        patches = load_config(db.parent).patches

        for task_id, (kind, state, decision, wanted, region_id, key, level, _) in tasks.items():
            values = votes[task_id]
            assert len(values) <= wanted, f"task {task_id} has {len(values)} counted answers, wants {wanted}"
            target = votes_target(values, wanted, early_stop)
            if state == "open":
                # Whatever closes a question is written with the answer that closes it.
                assert len(values) < target, f"open task {task_id} already has the answers it wanted: {values}"
            else:
                assert kind == "grid" or decision in ("yes", "no")
            if kind == "patch" and state == "done" and decision == "yes":
                window = WindowKey.parse(key)
                if can_subdivide(regions[region_id], window, patches.max_depth, patches.min_side):
                    missing = {str(c) for c in children(window)} - keys_per_region[region_id]
                    assert not missing, f"yes on task {task_id} but children {missing} were not created"

        stages = dict(connection.execute("SELECT id, stage FROM image").fetchall())
        open_per_image: dict[int, int] = defaultdict(int)
        for task_id, (_, state, *_rest, image_id) in tasks.items():
            open_per_image[image_id] += state == "open"
        for image_id, stage in stages.items():
            if stage == "done":
                assert open_per_image[image_id] == 0, f"image {image_id} is done with open questions"
        return {
            "answers": connection.execute("SELECT count(*) FROM answer").fetchone()[0],
            "open": sum(1 for t in tasks.values() if t[1] == "open"),
            "images_not_done": sum(1 for s in stages.values() if s not in ("done", "error")),
        }


def check_resumed(db: Path, before: dict[int, tuple], states_before: dict[int, str]) -> None:
    """After a resumed run: old answers intact, finished questions not asked again, everything done."""
    after = answers(db)
    for answer_id, fields in before.items():
        assert after.get(answer_id) == fields, f"answer {answer_id} changed or vanished on resume"
    new = {answer_id: fields for answer_id, fields in after.items() if answer_id not in before}
    assert new, "the resumed run stored no answer"
    done_before = {task_id for task_id, state in states_before.items() if state == "done"}
    asked_again = sorted({fields[0] for fields in new.values()} & done_before)
    assert asked_again == [], f"questions finished before the kill were asked again: {asked_again}"
    answered_pairs = {(fields[0], fields[1]) for fields in before.values()}
    repeated = [fields for fields in new.values() if (fields[0], fields[1]) in answered_pairs]
    assert repeated == [], "a worker was asked again a question it had answered"
    counts = check_store_consistent(db)
    assert counts["open"] == 0, "a non-gold question is still open after the run finished"
    assert counts["images_not_done"] == 0
    assert all(state == "done" for state in task_states(db).values())


@pytest.mark.slow
def test_simulate_killed_mid_run_resumes_without_asking_again(make_project, start_cli, run_cli) -> None:
    project = make_project(n_images=40, size=96)
    directory = project.directory
    project.close()
    db = directory / "crowdpatch.db"

    with open(directory.parent / "killed.log", "w", encoding="utf-8") as log:
        child = start_cli("simulate", directory, "--workers", 8, log=log)
        deadline = time.monotonic() + 120
        while answer_count(db) < KILL_AFTER_ANSWERS:
            assert child.poll() is None, "simulate finished before it could be killed: make the project larger"
            assert time.monotonic() < deadline, "simulate stored too few answers in time"
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL

    killed = check_store_consistent(db)
    assert killed["answers"] >= KILL_AFTER_ANSWERS
    assert killed["open"] > 0, "the run had finished when it was killed"
    before, states_before = answers(db), task_states(db)

    result = run_cli("simulate", directory, "--workers", 8, timeout=300)
    assert result.returncode == 0, result.stderr
    check_resumed(db, before, states_before)

    finished = answers(db)
    again = run_cli("simulate", directory, "--workers", 8)
    assert again.returncode == 0, again.stderr
    assert answers(db) == finished, "re-running a finished simulation stored answers"

    masks = run_cli("masks", directory, "--export", "png")
    assert masks.returncode == 0, masks.stderr
    assert len(list((directory / "masks" / "binary").glob("*.png"))) == 40


def test_run_simulation_stops_at_max_answers_and_resumes_to_completion(builtin_project) -> None:
    db = builtin_project.directory / "crowdpatch.db"
    report = run_simulation(builtin_project, workers=6, max_answers=60)
    assert report.answers == 60 and report.open_questions > 0
    counts = check_store_consistent(db)
    assert counts["answers"] == 60 and counts["open"] > 0
    before, states_before = answers(db), task_states(db)

    report = run_simulation(builtin_project, workers=6)
    assert report.open_questions == 0
    assert report.answers == len(answers(db)) - 60
    check_resumed(db, before, states_before)

    assert run_simulation(builtin_project, workers=6).answers == 0
