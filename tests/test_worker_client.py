"""The workers' HTTP client reads every reply one way: the outcomes the rehearsal and the bench scripts act on."""

from __future__ import annotations

import json

import httpx
import pytest

from crowdpatch.server.app import create_app
from crowdpatch.simulate.http import NO_REPLY, HttpxTransport, Retry, WorkerClient
from helpers.loops import run_in_fresh_loop


class Replies:
    """A transport that answers from a script and remembers what was sent."""

    def __init__(self, *replies: tuple[int, object]):
        self.replies = [(status, json.dumps(body).encode() if body is not None else b"") for status, body in replies]
        self.sent: list[tuple[str, str, bytes]] = []

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        self.sent.append((method, path, body))
        return self.replies.pop(0)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "task"), (204, "none"), (403, "stopped"), (429, "busy"), (401, "refused"), (422, "refused")],
)
def test_each_status_of_the_next_question_is_one_outcome(status: int, outcome: str) -> None:
    body = {"task_id": "7", "kind": "patch"} if status == 200 else None
    step = run_in_fresh_loop(lambda: WorkerClient(Replies((status, body)), token="t").next_task())
    assert (step.outcome, step.status) == (outcome, status)
    assert step.task == (body if status == 200 else None)


@pytest.mark.parametrize(
    ("status", "next_status", "outcome", "following"),
    [(201, "task", "stored", "task"), (200, "none", "replayed", "none"), (201, "session_complete", "stored", "none"),
     (201, "too_many_held", "stored", "busy"), (201, "stopped", "stored", "stopped"), (409, None, "conflict", None)],
)  # fmt: skip
def test_an_answer_and_the_question_that_comes_with_it_are_read_the_same_way(status, next_status, outcome, following):
    body = {"answer_id": 1, "next": {"task_id": "8"} if next_status == "task" else None, "next_status": next_status}
    step = run_in_fresh_loop(
        lambda: WorkerClient(Replies((status, body)), token="t").answer("7", "yes", "c-1", 900, True)
    )
    assert (step.outcome, step.following) == (outcome, following)
    assert step.task == ({"task_id": "8"} if next_status == "task" else None)


def test_a_request_without_reply_is_sent_again_the_same_until_the_retry_policy_gives_up() -> None:
    replies = Replies((NO_REPLY, None), (503, None), (201, {"answer_id": 1}))
    client = WorkerClient(replies, Retry(attempts=3, first_delay=0.0), token="t")
    step = run_in_fresh_loop(lambda: client.answer("7", "no", "c-1", 900))
    assert (step.outcome, step.failures) == ("stored", 2)
    assert len(set(replies.sent)) == 1 and len(replies.sent) == 3  # the very same request, thrice
    assert (client.failed_requests, client.server_errors, client.unavailable) == (2, 0, 1)  # a 503: come back later

    gives_up = WorkerClient(Replies((NO_REPLY, None), (NO_REPLY, None)), Retry(attempts=2, first_delay=0.0), token="t")
    step = run_in_fresh_loop(lambda: gives_up.next_task())
    assert (step.outcome, step.status, step.failures) == ("failed", NO_REPLY, 2)


def test_against_the_server_a_workers_answers_are_stored_replayed_and_refused_as_the_api_says(make_project) -> None:
    def no_gold(config) -> None:
        config.crowd.gold_rate = 0.0

    project = make_project(n_images=2, configure=no_gold)
    app = create_app(project)

    async def rehearse() -> dict[str, tuple[str, object]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            key = project.config.server.effective_api_key()
            alice, bob = WorkerClient(HttpxTransport(http)), WorkerClient(HttpxTransport(http))
            seen = {"opened": (await alice.open_session(project.config.name, "alice", key)).outcome}
            await bob.open_session(project.config.name, "bob", key)
            first = await alice.next_task()
            stored = await alice.answer(first.task["task_id"], "yes", "a-1", 900, next=True)
            seen["stored"] = (stored.outcome, stored.following)
            seen["replayed"] = (await alice.answer(first.task["task_id"], "yes", "a-1", 900)).outcome
            seen["conflict"] = (await bob.answer(first.task["task_id"], "no", "b-1", 900)).outcome  # not bob's
            seen["refused"] = (await alice.answer(stored.task["task_id"], "maybe", "a-2", 900)).outcome
            seen["no token"] = (await WorkerClient(HttpxTransport(http), token="nope").next_task()).outcome
            return seen

    assert run_in_fresh_loop(rehearse) == {
        "opened": "opened", "stored": ("stored", "task"), "replayed": "replayed", "conflict": "conflict",
        "refused": "refused", "no token": "refused",
    }  # fmt: skip
