"""Several server processes on one PostgreSQL: each hands its workers questions of images the others' workers
are not answering, and never leaves a worker without a question while one is free.

Two processes answering one image's questions wait for each other's locks (its questions, its decisions);
a lease names the process that handed it out, and the usual hand-out passes over images whose questions
another process's workers hold. That is a preference only: a worker whose process finds nothing else gets
a question of such an image all the same, and a lease that expired holds nothing back.
"""

from __future__ import annotations

import itertools

from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.crowd.dispatch.rules import NewAnswer
from crowdpatch.server.platforms import register_worker
from crowdpatch.store.models import LeaseRow
from helpers.clock import Clock


def on_postgres(url: str):
    def configure(config) -> None:
        config.db_url = url
        config.crowd.gold_rate = 0.0
        config.crowd.votes = 3
        config.crowd.early_stop = False

    return configure


def two_servers(project, clock: Clock) -> tuple[DatabaseDispatcher, DatabaseDispatcher]:
    """Two dispatchers on one project, as two server processes (on one machine or two) hold them."""
    first = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock)
    second = DatabaseDispatcher(project.sessions, project.id, project.config, clock=clock)
    assert first.server_number != second.server_number
    return first, second


def test_a_server_hands_out_images_the_other_servers_workers_are_not_answering(postgres_schema, make_project):
    project = make_project(n_images=3, configure=on_postgres(postgres_schema))
    clock = Clock(1_000_000.0)
    one, two = two_servers(project, clock)
    workers = (register_worker(project.sessions, project.id, "local", f"w{i}", {}).id for i in itertools.count())

    held_by_one = one.next_task(next(workers))
    image = held_by_one.image_id
    # The same server's next worker shares the question (three votes wanted): queue order, as before.
    assert one.next_task(next(workers)).task_id == held_by_one.task_id
    # The other server's worker is handed another image, though the first question still has a free slot.
    elsewhere = two.next_task(next(workers))
    assert elsewhere.image_id != image

    # An answer's next question keeps to the same rule (the hand-out in the answer's own statement).
    worker = next(workers)
    answered = two.next_task(worker)
    _stored, following = two.submit_and_next(NewAnswer(worker, answered.task_id, "yes", "c-1", seconds=4.0))
    assert following.assignment is not None
    assert following.assignment.image_id != image

    with project.sessions() as session:
        lease = session.query(LeaseRow).filter_by(task_id=held_by_one.task_id).first()
        assert (lease.server, lease.image_id) == (one.server_number, image)


def test_a_worker_gets_a_question_of_an_image_another_server_holds_when_nothing_else_is_free(
    postgres_schema, make_project
):
    project = make_project(n_images=1, configure=on_postgres(postgres_schema))
    clock = Clock(1_000_000.0)
    one, two = two_servers(project, clock)
    alice, bob = (register_worker(project.sessions, project.id, "local", name, {}).id for name in ("alice", "bob"))

    held = one.next_task(alice)
    shared = two.next_task(bob)
    assert shared is not None and shared.task_id == held.task_id  # the only question with a free slot


def test_an_expired_lease_keeps_no_other_server_away_from_its_image(postgres_schema, make_project):
    project = make_project(n_images=2, configure=on_postgres(postgres_schema))
    clock = Clock(1_000_000.0)
    one, two = two_servers(project, clock)
    alice, bob = (register_worker(project.sessions, project.id, "local", name, {}).id for name in ("alice", "bob"))

    held = one.next_task(alice)
    clock.now = held.lease_expires_at + 1  # alice's server went away; her lease ran out
    assert two.next_task(bob).image_id == held.image_id
