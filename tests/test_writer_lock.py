"""Several server processes on one SQLite file take turns writing (store.writer_lock)."""

from __future__ import annotations

import threading

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.server.platforms import register_worker
from crowdpatch.store import open_database


def one_vote(config) -> None:
    config.crowd.votes = 1
    config.crowd.gold_rate = 0.0


def test_a_second_process_waits_for_the_first_ones_transaction_and_never_leases_the_same_slot(make_project):
    project = make_project(n_images=3, size=64, configure=one_vote)
    first = DatabaseDispatcher(project.sessions, project.id, project.config)
    # A second "process": its own engine, connection pool and writer lock on the same file.
    second = DatabaseDispatcher(open_database(str(project.engine.url))[1], project.id, project.config)
    alice, bob, carol = (
        register_worker(project.sessions, project.id, "local", name, {}).id for name in ("alice", "bob", "carol")
    )
    for planner in (first, second):  # each has swept its expired leases (a write) and now only reads before leasing
        planner.next_task(carol)
    picked, release = threading.Event(), threading.Event()
    real_lease = first._lease

    def pick_then_hold(*args):
        picked.set()  # the question is chosen, its lease not yet written
        release.wait(10)
        return real_lease(*args)

    first._lease = pick_then_hold
    leased: dict[str, object] = {}
    one = threading.Thread(target=lambda: leased.update(alice=first.next_task(alice)))
    two = threading.Thread(target=lambda: leased.update(bob=second.next_task(bob)))
    one.start()
    assert picked.wait(10)
    two.start()
    two.join(1.0)
    waited = two.is_alive()
    release.set()
    one.join(10)
    two.join(10)
    assert waited, "the second writer did not wait for the first one's transaction"
    # Each question wants one answer: the second process saw the first one's lease and took another question.
    assert leased["alice"].task_id != leased["bob"].task_id
