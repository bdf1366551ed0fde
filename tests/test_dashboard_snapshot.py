"""The dashboard and ``/progress`` answer the last figures computed in the background; ``fresh=true`` counts now."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crowdpatch.server.app import create_app
from crowdpatch.server.snapshot import FiguresSnapshot


def no_gold(config) -> None:
    config.crowd.gold_rate = 0.0
    config.server.answers_per_session = 50


@pytest.fixture
def served(make_project):
    """A served project whose dashboard refreshes every 0.05 s while asked."""
    clients: list[TestClient] = []

    def start() -> tuple[Any, TestClient]:
        project = make_project(n_images=3, size=64, configure=no_gold)
        app = create_app(project)
        state = app.state.crowdpatch
        state.dashboard.stop()
        state.dashboard = FiguresSnapshot(state.dashboard.compute, min_interval=0.05)
        client = TestClient(app)
        clients.append(client)
        return project, client

    yield start
    for client in clients:
        client.app.state.crowdpatch.dashboard.stop()
        client.close()


def api_key(project) -> dict[str, str]:
    return {"X-API-Key": project.config.server.effective_api_key()}


def answer(client: TestClient, worker: str, count: int) -> None:
    """``count`` answers by one Prolific worker."""
    opened = client.post(
        "/api/v1/projects/proj/sessions",
        json={"platform": "prolific", "worker_id": worker, "study_id": "s", "session_id": "x"},
    )
    auth = {"Authorization": f"Bearer {opened.json()['token']}"}
    for index in range(count):
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        value = {"cells": []} if task["kind"] == "grid" else "yes"
        stored = client.post(
            "/api/v1/answers",
            headers=auth,
            json={"task_id": task["task_id"], "answer": value, "client_id": f"{worker}-{index}", "client_ms": 900},
        )
        assert stored.status_code == 201, stored.text


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_first_request_computes_real_figures_and_says_how_old_they_are(served):
    project, client = served()
    answer(client, "p1", 3)
    before = time.time()
    figures = client.get("/api/v1/projects/proj/dashboard", headers=api_key(project)).json()
    assert figures["progress"]["answers"] == 3
    assert [row["answers"] for row in figures["workers"] if row["worker"] == "p1"] == [3]
    assert {"pace", "previews"} <= figures.keys()
    assert before <= figures["as_of"] <= time.time()
    assert figures["compute_seconds"] >= 0 and figures["stale_seconds"] >= 0


def test_the_dashboard_and_progress_catch_up_with_new_answers_and_a_fresh_count_has_them_at_once(served):
    project, client = served()
    answer(client, "p1", 2)
    assert client.get("/api/v1/projects/proj/dashboard", headers=api_key(project)).json()["progress"]["answers"] == 2
    progress = client.get("/api/v1/projects/proj/progress", headers=api_key(project)).json()
    assert progress["answers"] == 2 and progress["stale_seconds"] >= 0
    answer(client, "p2", 3)
    fresh = client.get("/api/v1/projects/proj/progress", params={"fresh": "true"}, headers=api_key(project)).json()
    assert fresh["answers"] == 5 and fresh["stale_seconds"] == 0
    assert eventually(
        lambda: client.get("/api/v1/projects/proj/progress", headers=api_key(project)).json()["answers"] == 5
    )
    assert client.app.state.crowdpatch.progress.refreshing

    def caught_up() -> bool:
        figures = client.get("/api/v1/projects/proj/dashboard", headers=api_key(project)).json()
        return figures["progress"]["answers"] == 5 and any(row["worker"] == "p2" for row in figures["workers"])

    assert eventually(caught_up)
    assert client.app.state.crowdpatch.dashboard.refreshing


class Counted:
    """A slow computation that counts its calls and the most of them that ever ran at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most = 0
        self._guard = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._guard:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            calls = self.calls
        time.sleep(0.02)
        with self._guard:
            self.running -= 1
        return {"calls": calls}


def test_concurrent_first_requests_share_one_computation():
    compute = Counted()
    snapshot = FiguresSnapshot(compute, min_interval=60)
    try:
        with ThreadPoolExecutor(8) as pool:
            firsts = list(pool.map(lambda _: snapshot.current(), range(8)))
    finally:
        snapshot.stop()
    assert compute.calls == 1 and [f["calls"] for f in firsts] == [1] * 8


def test_requests_and_the_background_refresh_never_compute_at_once():
    compute = Counted()
    snapshot = FiguresSnapshot(compute, min_interval=0.001, cost_factor=0.0)
    seen: set[int] = set()

    def asked_until_refreshed(pool: ThreadPoolExecutor) -> bool:
        """Concurrent requests until the background thread has computed once more (False: it did not)."""
        before = compute.calls
        return eventually(
            lambda: (
                not seen.update(f["calls"] for f in pool.map(lambda _: snapshot.current(), range(8)))
                and compute.calls > before
            )
        )

    try:
        with ThreadPoolExecutor(8) as pool:
            for _ in range(5):
                assert asked_until_refreshed(pool)
                snapshot.stop(timeout=0)  # the old thread may still be computing when the next request starts one
    finally:
        snapshot.stop()
    assert compute.most == 1 and len(seen) > 1


def test_a_failing_refresh_is_logged_and_keeps_the_last_good_figures(caplog):
    results: list[Any] = [{"answers": 1}]

    def compute() -> dict[str, Any]:
        result = results[0]
        if isinstance(result, Exception):
            raise result
        return result

    snapshot = FiguresSnapshot(compute, min_interval=0.01)
    try:
        first = snapshot.current()
        assert first["answers"] == 1
        results[0] = RuntimeError("database went away")
        with caplog.at_level(logging.ERROR, logger="crowdpatch.server.snapshot"):
            assert eventually(lambda: "database went away" in caplog.text)
        assert "could not be refreshed" in caplog.text
        kept = snapshot.current()
        assert kept["answers"] == 1 and kept["as_of"] == first["as_of"]
        assert snapshot.refreshing  # still refreshing: the next good computation is taken
        results[0] = {"answers": 2}
        assert eventually(lambda: snapshot.current()["answers"] == 2)
    finally:
        snapshot.stop()


def test_the_thread_ends_when_nobody_asks_and_starts_again_on_the_next_request():
    compute = Counted()
    snapshot = FiguresSnapshot(compute, min_interval=0.01, idle_after=0.2)
    snapshot.current()
    assert snapshot.refreshing
    assert eventually(lambda: not snapshot.refreshing)
    stopped_at = compute.calls
    time.sleep(0.1)
    assert compute.calls == stopped_at  # nothing computed while nobody asks
    snapshot.current()
    assert snapshot.refreshing
    snapshot.stop()
    assert not snapshot.refreshing


def test_the_app_s_shutdown_stops_the_thread(make_project):
    project = make_project(n_images=3, size=64, configure=no_gold)
    with TestClient(create_app(project)) as client:
        assert client.get("/api/v1/projects/proj/dashboard", headers=api_key(project)).status_code == 200
        dashboard = client.app.state.crowdpatch.dashboard
        assert dashboard.refreshing
    assert not dashboard.refreshing
