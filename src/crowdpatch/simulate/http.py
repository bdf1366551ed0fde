"""Simulated workers that answer through a running server's HTTP API, not the library.

A study can be rehearsed against the real server (sessions, leases, answers, quality control),
and the same loop generates load: each worker is one asyncio task with its own session.
Answers come from the ground-truth masks when the project has them (else at random), with
modeled times sent as ``client_ms``; the server records them as modeled (platform "simulated").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.crowd.dispatch.rules import Assignment
from crowdpatch.project import Project
from crowdpatch.simulate.run import SimulationError, _Oracles, simulated_answer
from crowdpatch.simulate.workers import SimulatedWorker, draw_workers

RETRIES = 5


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
            variant=task.get("variant"), active_cells=tuple(task["active_cells"]) if task.get("active_cells") is not None else None,
        )
        if task["kind"] == "polygon":
            x0, y0, x1, y1 = task["box"]
            return {"polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}, 79.0
        if self.oracles is not None and self.project is not None:
            return simulated_answer(assignment, worker, self.oracles, self.project, self.rng)
        if task["kind"] == "grid":
            cells = (task.get("grid_size") or 1) ** 2
            return {"cells": [i for i in range(cells) if self.rng.random() < 0.3]}, 10.3
        return ("yes" if self.rng.random() < 0.5 else "no"), 1.6


async def _request(client: httpx.AsyncClient, method: str, url: str, report: HttpSimulationReport, **kwargs) -> httpx.Response:
    for attempt in range(RETRIES):
        started = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError:
            if attempt == RETRIES - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)
            continue
        report.latencies_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code < 500 or attempt == RETRIES - 1:
            return response
        await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def _work(
    client: httpx.AsyncClient, name: str, worker: SimulatedWorker, crowd: _Crowd, report: HttpSimulationReport,
    project_name: str, api_key: str, budget: list[int], deadline: float,
) -> None:
    response = await _request(
        client, "POST", f"/api/v1/projects/{project_name}/sessions", report,
        json={"platform": "simulated", "worker_id": name}, headers={"X-API-Key": api_key},
    )
    if response.status_code != 201:
        report.stopped += 1
        return
    auth = {"Authorization": f"Bearer {response.json()['token']}"}
    count = 0
    task: dict[str, Any] | None = None  # handed out with the last answer ("next": true); its answer is reserved in budget
    while task is not None or (budget[0] > 0 and time.monotonic() < deadline):
        if task is None:
            response = await _request(client, "GET", "/api/v1/tasks/next", report, headers=auth)
            if response.status_code == 204:
                return
            if response.status_code == 403:
                report.stopped += 1
                return
            if response.status_code == 429:
                await asyncio.sleep(0.05)
                continue
            response.raise_for_status()
            task = response.json()
            budget[0] -= 1
        value, seconds = crowd.answer(task, worker)
        client_id = f"{name}:{task['task_id']}:{count}"
        count += 1
        # The next question comes with the answer (one round trip), when the budget leaves room for its answer.
        ask_next = budget[0] > 0 and time.monotonic() < deadline
        if ask_next:
            budget[0] -= 1
        body = {"task_id": task["task_id"], "answer": value, "client_id": client_id, "client_ms": max(1, int(seconds * 1000)), "next": ask_next}
        posted = await _request(client, "POST", "/api/v1/answers", report, json=body, headers=auth)
        task = None
        if posted.status_code in (200, 201):
            report.acknowledged.add(client_id)
            report.answers += 1
            result = posted.json()
            task = result.get("next")
            if ask_next and task is None:
                budget[0] += 1
                if result["next_status"] == "none":
                    return
                if result["next_status"] == "stopped":
                    report.stopped += 1
                    return
        elif ask_next:
            budget[0] += 1
        if posted.status_code == 409:
            report.conflicts += 1
        elif posted.status_code not in (200, 201):
            posted.raise_for_status()


async def simulate_via_http_async(
    base_url: str, project_name: str, api_key: str, workers: int, *, project: Project | None = None,
    max_answers: int | None = None, max_seconds: float | None = None, seed: int = 0, random_answers: bool = False,
) -> HttpSimulationReport:
    """``workers`` concurrent simulated workers against ``base_url`` until no work (or a budget) is left."""
    crowd = _Crowd(project, seed, random_answers)
    from crowdpatch.config import SimulationConfig

    sim = project.config.simulation if project is not None else SimulationConfig()
    crew = draw_workers(sim, workers, np.random.default_rng([seed, 3]))
    report = HttpSimulationReport(workers=workers)
    budget = [max_answers if max_answers is not None else 10**12]
    deadline = time.monotonic() + (max_seconds if max_seconds is not None else 10**9)
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        await asyncio.gather(*(
            _work(client, f"http-{seed}-{i:04d}", worker, crowd, report, project_name, api_key, budget, deadline)
            for i, worker in enumerate(crew)
        ))
    report.seconds = time.perf_counter() - started
    return report


def simulate_via_http(base_url: str, project: Project, workers: int, max_answers: int | None = None, seed: int = 0) -> HttpSimulationReport:
    """`crowdpatch simulate PROJECT --via URL`: the project's simulated crowd, through the server."""
    return asyncio.run(
        simulate_via_http_async(
            base_url, project.config.name, project.config.server.effective_api_key(), workers,
            project=project, max_answers=max_answers, seed=seed,
        )
    )
