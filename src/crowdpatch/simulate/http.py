"""Simulated workers that answer through a running server's HTTP API, and the one HTTP worker client they use.

A study can be rehearsed against the real server (sessions, leases, answers, quality control),
and the same loop generates load: each worker is one asyncio task with its own session. Answers
come from the ground-truth masks when the project has them (else at random), with modeled times
sent as ``client_ms``; the server records them as modeled (platform "simulated").

:class:`WorkerClient` is how every program here talks to the server as a worker (this rehearsal,
``bench/load.py``, ``bench/chaos.py``): it opens the session, asks for questions and posts answers,
retries what got no reply by its :class:`Retry` policy, and reads every status one way, into a
:class:`Step`. Two transports carry its requests: httpx, and :class:`Http11` (raw HTTP/1.1 on
asyncio streams: a load generator must cost little next to the server it measures).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.config import SimulationConfig
from crowdpatch.crowd.dispatch.rules import Assignment
from crowdpatch.project import Project
from crowdpatch.simulate.run import SimulationError, _Oracles, simulated_answer
from crowdpatch.simulate.workers import SimulatedWorker, draw_workers

NO_REPLY = 599
"""The status a transport reports when the connection dropped or could not be made (no reply at all)."""


class Transport(Protocol):
    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        """The reply's status and body; :data:`NO_REPLY` when there was none."""
        ...


class HttpxTransport:
    """Requests through an ``httpx.AsyncClient`` (its connection pool, base URL and timeouts)."""

    def __init__(self, client: httpx.AsyncClient):
        self.client = client

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        try:
            response = await self.client.request(method, path, headers=headers, content=body or None)
        except httpx.TransportError:
            return NO_REPLY, b""
        return response.status_code, response.content


class Http11:
    """One keep-alive HTTP/1.1 connection; just enough of the protocol for this API (Content-Length bodies)."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            head = await self.reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
        except (OSError, asyncio.IncompleteReadError):
            # The server dropped the connection (it does after an unhandled error): a fresh one next time.
            self.close()
            return NO_REPLY, b""
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        length, close = 0, False
        for line in header_lines:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""  # type: ignore[union-attr]
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass(frozen=True)
class Retry:
    """What to do with a request that got no reply, or a server error (5xx): send it again, the very same.

    An answer sent again carries the same ``client_id``, so a retry never stores it twice.
    """

    attempts: int | None = 1
    """Sends in all (1: never again); None: until ``give_up_seconds``."""
    give_up_seconds: float = 60.0
    first_delay: float = 0.05
    """Seconds before the first retry, doubling with each one up to ``max_delay``."""
    max_delay: float = 1.0


Outcome = Literal["task", "stored", "replayed", "opened", "none", "stopped", "busy", "conflict", "refused", "failed"]
"""What a reply means to a worker:

* "task": a question was handed out (``Step.task``); "opened": the session is open (``Step.body["token"]``);
* "stored": the answer was stored; "replayed": it was stored before (the same ``client_id``): stored once;
* "none": nothing is left for this worker (or its session's answers are all given);
* "stopped": the quality checks stopped the worker; "busy": it holds too many questions, ask again soon;
* "conflict": the answer was refused because the question is no longer this worker's (its lease went to another);
* "refused": any other 4xx (a malformed request); "failed": no reply, or a server error, after every retry.
"""

_NEXT_STATUS: dict[str | None, Outcome] = {
    "task": "task", "none": "none", "session_complete": "none", "stopped": "stopped", "too_many_held": "busy",
}  # fmt: skip
"""An answer's ``next_status`` read as the same outcome as ``GET /tasks/next``'s status."""


@dataclass
class Step:
    """One request's reply, read."""

    outcome: Outcome
    status: int
    body: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    """The question handed out: by ``GET /tasks/next``, or with the answer (``"next": true``)."""
    following: Outcome | None = None
    """With ``"next": true``: what the next question's outcome is ("task", "none", "stopped", "busy")."""
    failures: int = 0
    """Sends of this request that got no reply or a server error (each sent again)."""
    seconds: float = 0.0
    """From the first send to the last reply."""


@dataclass
class WorkerClient:
    """One worker's side of the API, over ``transport``; every status is read into a :class:`Step` here."""

    transport: Transport
    retry: Retry = field(default_factory=Retry)
    token: str | None = None
    failed_requests: int = 0
    """Sends that got no reply or a 5xx, over this client's life."""
    server_errors: int = 0
    """Of those, 5xx replies of a server that was up and failed (a 503 asks to come back later: not counted)."""
    unavailable: int = 0
    """Of those, 503 replies: the server could not store anything then (a full disk), and said when to come back."""

    async def open_session(self, project: str, worker_id: str, api_key: str, platform: str = "simulated") -> Step:
        body = json.dumps({"platform": platform, "worker_id": worker_id}).encode()
        headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
        step = await self._send("POST", f"/api/v1/projects/{project}/sessions", headers, body)
        if step.status == 201:
            step.outcome = "opened"
            self.token = step.body["token"]  # type: ignore[index]
        return step

    async def next_task(self, exclude: tuple[str, ...] = ()) -> Step:
        path = "/api/v1/tasks/next" + (f"?exclude={','.join(exclude)}" if exclude else "")
        step = await self._send("GET", path, self._auth())
        if step.status == 200:
            step.outcome, step.task = "task", step.body
        return step

    async def answer(self, task_id: str, value: Any, client_id: str, client_ms: int, next: bool = False) -> Step:
        """Post an answer; with ``next`` the next question comes with it (``Step.task``, ``Step.following``)."""
        payload = {"task_id": task_id, "answer": value, "client_id": client_id, "client_ms": client_ms}
        if next:
            payload["next"] = True
        step = await self._send("POST", "/api/v1/answers", {**self._auth(), "Content-Type": "application/json"},
                                json.dumps(payload).encode())  # fmt: skip
        if step.status in (200, 201):
            step.outcome = "stored" if step.status == 201 else "replayed"
            if next:
                step.task = step.body.get("next")  # type: ignore[union-attr]
                step.following = _NEXT_STATUS.get(step.body.get("next_status"), "none")  # type: ignore[union-attr]
        return step

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _send(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Step:
        """Send until a reply below 500 (or the retry policy gives up); the reply read by its status."""
        started = time.perf_counter()
        failures, delay = 0, self.retry.first_delay
        while True:
            status, data = await self.transport.request(method, path, headers, body)
            if status < 500:
                break
            failures += 1
            self.failed_requests += 1
            self.server_errors += status not in (NO_REPLY, 503)
            self.unavailable += status == 503
            out_of_attempts = self.retry.attempts is not None and failures >= self.retry.attempts
            if out_of_attempts or time.perf_counter() - started > self.retry.give_up_seconds:
                return Step("failed", status, failures=failures, seconds=time.perf_counter() - started)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry.max_delay)
        reply = _json(data) if status != 204 else None
        outcome: Outcome = {204: "none", 403: "stopped", 409: "conflict", 429: "busy"}.get(status, "refused")
        return Step(outcome, status, reply if isinstance(reply, dict) else None, failures=failures,
                    seconds=time.perf_counter() - started)  # fmt: skip


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


# -- the rehearsal: a project's simulated crowd through the server ------------------------------

REHEARSAL_RETRY = Retry(attempts=5, first_delay=0.05, max_delay=1.0)
"""A rehearsal rides out a server restart of a second or so; longer is an error worth seeing."""


@dataclass
class HttpSimulationReport:
    answers: int = 0
    workers: int = 0
    stopped: int = 0
    conflicts: int = 0
    """Answers the server refused with 409 (a lease that expired and was taken by others)."""
    acknowledged: set[str] = field(default_factory=set)
    """client ids of every answer the server acknowledged (201 or 200)."""
    latencies_ms: list[float] = field(default_factory=list)
    """Per request, next-task and answer alike."""
    seconds: float = 0.0


class _Crowd:
    def __init__(self, project: Project | None, seed: int, random_answers: bool):
        self.project = project
        self.rng = np.random.default_rng([seed, 7])
        self.oracles = None
        if project is not None and not random_answers:
            try:
                self.oracles = _Oracles(project)
            except SimulationError:
                self.oracles = None

    def answer(self, task: dict[str, Any], worker: SimulatedWorker) -> tuple[Any, float]:
        assignment = Assignment(
            task_id=int(task["task_id"]), kind=task["kind"], image_id=task["image_id"], box=Box.from_list(task["box"]),
            grid_size=task.get("grid_size"), question=task["question"], lease_expires_at=0.0,
            variant=task.get("variant"),
            active_cells=tuple(task["active_cells"]) if task.get("active_cells") is not None else None,
        )  # fmt: skip
        if task["kind"] == "polygon":
            x0, y0, x1, y1 = task["box"]
            return {"polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}, 79.0
        if self.oracles is not None and self.project is not None:
            return simulated_answer(assignment, worker, self.oracles, self.project, self.rng)
        if task["kind"] == "grid":
            cells = (task.get("grid_size") or 1) ** 2
            return {"cells": [i for i in range(cells) if self.rng.random() < 0.3]}, 10.3
        return ("yes" if self.rng.random() < 0.5 else "no"), 1.6


async def _work(
    client: WorkerClient, name: str, worker: SimulatedWorker, crowd: _Crowd, report: HttpSimulationReport,
    project_name: str, api_key: str, budget: list[int], deadline: float,
) -> None:  # fmt: skip
    def timed(step: Step) -> Step:
        report.latencies_ms.append(step.seconds * 1000)
        return step

    if timed(await client.open_session(project_name, name, api_key)).outcome != "opened":
        report.stopped += 1
        return
    count = 0
    # A question handed out with the last answer ("next": true); its answer is reserved in the budget.
    task: dict[str, Any] | None = None
    while task is not None or (budget[0] > 0 and time.monotonic() < deadline):
        if task is None:
            step = timed(await client.next_task())
            if step.outcome == "busy":
                await asyncio.sleep(0.05)
                continue
            if step.outcome != "task":
                report.stopped += step.outcome == "stopped"
                _raise_unless(step, ("none", "stopped"))
                return
            task = step.task
            budget[0] -= 1
        assert task is not None
        value, seconds = crowd.answer(task, worker)
        client_id = f"{name}:{task['task_id']}:{count}"
        count += 1
        # The next question comes with the answer (one round trip), when the budget leaves room for its answer.
        ask_next = budget[0] > 0 and time.monotonic() < deadline
        if ask_next:
            budget[0] -= 1
        posted = timed(await client.answer(task["task_id"], value, client_id, max(1, int(seconds * 1000)), ask_next))
        task = None
        if posted.outcome in ("stored", "replayed"):
            report.acknowledged.add(client_id)
            report.answers += 1
            task = posted.task
            if ask_next and task is None:
                budget[0] += 1
                if posted.following in ("none", "stopped"):
                    report.stopped += posted.following == "stopped"
                    return
            continue
        if ask_next:
            budget[0] += 1
        report.conflicts += posted.outcome == "conflict"
        _raise_unless(posted, ("conflict",))


def _raise_unless(step: Step, expected: tuple[Outcome, ...]) -> None:
    if step.outcome not in expected:
        raise RuntimeError(f"the server answered {step.status} ({step.outcome}): {step.body}")


async def simulate_via_http_async(
    base_url: str, project_name: str, api_key: str, workers: int, *, project: Project | None = None,
    max_answers: int | None = None, max_seconds: float | None = None, seed: int = 0, random_answers: bool = False,
) -> HttpSimulationReport:  # fmt: skip
    """``workers`` concurrent simulated workers against ``base_url`` until no work (or a budget) is left."""
    crowd = _Crowd(project, seed, random_answers)
    sim = project.config.simulation if project is not None else SimulationConfig()
    crew = draw_workers(sim, workers, np.random.default_rng([seed, 3]))
    report = HttpSimulationReport(workers=workers)
    budget = [max_answers if max_answers is not None else 10**12]
    deadline = time.monotonic() + (max_seconds if max_seconds is not None else 10**9)
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as http:
        transport = HttpxTransport(http)
        await asyncio.gather(*(
            _work(WorkerClient(transport, REHEARSAL_RETRY), f"http-{seed}-{i:04d}", worker, crowd, report,
                  project_name, api_key, budget, deadline)
            for i, worker in enumerate(crew)
        ))  # fmt: skip
    report.seconds = time.perf_counter() - started
    return report


def simulate_via_http(
    base_urls: Sequence[str], project: Project, workers: int, max_answers: int | None = None, seed: int = 0
) -> list[HttpSimulationReport]:
    """`crowdpatch simulate PROJECT --via URL [--via URL ...]`: the project's simulated crowd, through the server.

    Several URLs are servers of one study (several hosts behind one database): the workers and the answer budget
    are split evenly over them, each share a crowd of its own answering through its server; one report per URL.
    """
    count = len(base_urls)
    shares = [workers // count + (i < workers % count) for i in range(count)]
    budgets = [None if max_answers is None else max_answers // count + (i < max_answers % count) for i in range(count)]

    async def crowds() -> list[HttpSimulationReport]:
        return list(
            await asyncio.gather(
                *(
                    simulate_via_http_async(
                        url,
                        project.config.name,
                        project.config.server.effective_api_key(),
                        share,
                        project=project,
                        max_answers=budget,
                        seed=seed + i,
                    )
                    for i, (url, share, budget) in enumerate(zip(base_urls, shares, budgets))
                )
            )  # fmt: skip
        )

    return asyncio.run(crowds())


__all__ = [
    "Http11", "HttpSimulationReport", "HttpxTransport", "Retry", "Step", "Transport", "WorkerClient",
    "simulate_via_http", "simulate_via_http_async",
]  # fmt: skip
