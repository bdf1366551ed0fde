"""Two server processes on one database (PostgreSQL, or one SQLite file).

50 concurrent simulated workers answer through the HTTP API.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict

import pytest
from sqlalchemy import select

from crowdpatch.crowd.votes import votes_target
from crowdpatch.simulate.http import simulate_via_http_async
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow
from helpers.live_server import free_port, wait_until_serving
from helpers.loops import run_in_fresh_loop
from helpers.postgres import fresh_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database(request):
    """The database two server processes share: the project's SQLite file (None), or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_schema() as url:
        yield url


@pytest.mark.slow
def test_two_processes_and_50_workers_never_over_ask_and_lose_no_answer(
    shared_database, make_project, start_cli, tmp_path
):
    """On SQLite the processes take turns at the one writer (``store.writer_lock``); on PostgreSQL, row locks.

    Both ways of running several processes: a second ``serve`` command, which itself runs ``--workers 2``.
    """

    def configure(config):
        config.db_url = shared_database
        config.crowd.lease_seconds = 30
        config.patches.presentation = "single"  # many small questions: the most leasing there can be
        config.simulation.spammers = 0.0  # a stopped worker's answers stop counting, which would blur the check

    project = make_project(n_images=8, size=64, configure=configure)
    urls, processes = [], []
    for k in range(2):
        port = free_port()
        log = open(tmp_path / f"serve-{k}.log", "w")
        processes.append(start_cli("serve", project.directory, "--port", str(port), "--workers", str(k + 1), log=log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, process in zip(urls, processes):
            wait_until_serving(url, process)
        key = project.config.server.effective_api_key()

        async def crowd():
            return await asyncio.gather(
                *(
                    simulate_via_http_async(url, project.config.name, key, 25, project=project, seed=k, max_seconds=90)
                    for k, url in enumerate(urls)
                )
            )

        reports = run_in_fresh_loop(crowd)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
    acknowledged = set().union(*(r.acknowledged for r in reports))
    assert len(acknowledged) > 100
    # No lease expires within the run: a refused answer would mean a slot handed out that was not free
    # (a question leased past what it wants, closed by others' answers before this one came).
    assert sum(report.conflicts for report in reports) == 0
    with project.sessions() as session:
        stored = set(session.scalars(select(AnswerRow.client_id)))
        values: dict[int, list] = defaultdict(list)
        for task_id, value in session.execute(select(AnswerRow.task_id, AnswerRow.value).order_by(AnswerRow.id)):
            values[task_id].append(value)
        tasks = session.scalars(select(TaskRow).where(TaskRow.kind != "gold")).all()
    assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged answers are missing"
    for task in tasks:
        answers = values.get(task.id, [])
        # Each answer was wanted when it came: the k-th (from 0) only while k < the target of those before it.
        assert all(k < votes_target(answers[:k], task.votes_wanted, True) for k in range(len(answers))), (
            task.id,
            answers,
        )


@pytest.mark.slow
def test_two_hosts_sharing_only_the_database_url_serve_one_crowd_to_the_end(
    postgres_schema, make_project, start_cli, run_cli, tmp_path
):
    """Two `serve` processes as on two machines: each its own project folder holding only `crowdpatch.toml` (the
    database URL and the secrets), nothing else shared but PostgreSQL; `simulate --via A --via B` spreads one
    crowd over both, and the study ends with every guarantee of one server."""

    def configure(config):
        config.db_url = postgres_schema
        config.crowd.gold_rate = 0.0
        config.simulation.spammers = 0.0  # a stopped worker's answers stop counting, which would blur the check

    project = make_project(n_images=4, size=64, configure=configure)
    second_host = tmp_path / "second-host"
    second_host.mkdir()
    shutil.copy(project.directory / "crowdpatch.toml", second_host / "crowdpatch.toml")
    urls, processes = [], []
    for k, folder in enumerate((project.directory, second_host)):
        port = free_port()
        processes.append(start_cli("serve", folder, "--port", str(port), log=open(tmp_path / f"serve-{k}.log", "w")))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, process in zip(urls, processes):
            wait_until_serving(url, process)
        via = [option for url in urls for option in ("--via", url)]
        results = []
        for _ in range(3):  # a worker told "nothing now" while others hold the last leases stops: run it again
            results.append(run_cli("simulate", project.directory, "--workers", "6", *via, timeout=300))
            with project.sessions() as session:
                if set(session.scalars(select(ImageRow.stage))) == {"done"}:
                    break
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
    assert all(result.returncode == 0 for result in results), [result.stderr for result in results]
    lines = [line for result in results for line in result.stdout.splitlines() if "answers acknowledged by" in line]
    by_host = {url: sum(int(line.split()[0]) for line in lines if url in line) for url in urls}
    assert all(count > 0 for count in by_host.values()), by_host  # both hosts served answers
    acknowledged = list(by_host.values())
    assert sorted(path.name for path in second_host.iterdir()) == ["crowdpatch.toml"]  # nothing written there
    with project.sessions() as session:
        values: dict[int, list] = defaultdict(list)
        for task_id, value in session.execute(select(AnswerRow.task_id, AnswerRow.value).order_by(AnswerRow.id)):
            values[task_id].append(value)
        client_ids = list(session.scalars(select(AnswerRow.client_id)))
        tasks = session.scalars(select(TaskRow)).all()
        stages = set(session.scalars(select(ImageRow.stage)))
    assert sum(acknowledged) == len(client_ids) == len(set(client_ids))  # every acknowledged answer, once
    assert stages == {"done"} and all(task.state != "open" for task in tasks)  # the study ran to its end
    for task in tasks:
        answers = values.get(task.id, [])
        assert all(k < votes_target(answers[:k], task.votes_wanted, True) for k in range(len(answers))), task.id
