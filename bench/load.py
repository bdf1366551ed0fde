"""Server load: N concurrent simulated workers on loopback, next-task + answer loop (not a test).

For each backend (SQLite with 1 process; PostgreSQL with 2 and 4 processes), each durability
setting and each crowd size, a fresh built-in project is served by `crowdpatch serve`, and N
workers each open a session, then ask for a task and answer it (at random) in a loop for a fixed
time. Prints one Markdown row per run: answers/s and request latency percentiles (every request:
next-task and answer alike, measured by the client from sending the request to reading the whole
response).

The load generator is deliberately cheap so that it measures the server, not itself: one process, the
workers' client (crowdpatch.simulate.http.WorkerClient) over raw HTTP/1.1 keep-alive on asyncio streams
and uvloop (its Http11 transport: one connection per worker, no HTTP library), pinned
to the last CPU core, while the server processes are pinned to the other cores (PostgreSQL's own
processes are not pinned). On a 2-core machine that is one core each.

``--sync`` sets what a commit waits for, to measure the throughput cost of durability: SQLite's
``PRAGMA synchronous`` (FULL: every commit is fsynced; NORMAL, the default: durable against a
crash of the process, the WAL is fsynced at checkpoints; OFF) and PostgreSQL's
``synchronous_commit`` (on for full and normal, off for off: a crash of the database may lose the
last commits, never corrupt it). An answer is acknowledged only after its commit in every case.

With ``--json PATH`` each run is also appended to PATH as it ends, one JSON object per line (JSON
Lines; the runs of several commands gather in one file), the same object the printed row is made
from: ``backend``, ``processes``, ``workers``, ``phase``, ``loop``, ``answers_per_s``, ``p50_ms``,
``p95_ms``, ``p99_ms``, ``errors``,
``server_cpu_ms_per_answer``, ``db_cpu_ms_per_answer`` (PostgreSQL's processes; null for SQLite,
which runs inside the server's processes and is counted in their CPU), ``statements_per_answer``
(SQL statements the server's processes sent per answer, counted by :mod:`crowdpatch.store.statements`),
then the rest of the row: ``sync``, ``answers``, ``conflicts``, ``error_statuses``, ``exhausted``,
``stopped``, ``client_cpu_ms_per_answer``, ``load_average``, ``steal_percent``, ``connections_per_process``
(the workers' keep-alive connections held by each server process, most first, counted near the end of the
run: their split over the processes moves the p99).

    python bench/load.py [--workers 8 64 256] [--seconds 8] [--sync normal off] [--backends sqlite:1 postgresql:2]
        [--postgres postgresql://postgres@127.0.0.1:5432/test] [--json runs.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import text

from benchkit import (
    POSTGRES,
    StealMeter,
    builtin_files,
    connections_per_process,
    cpu_model,
    free_port,
    served_project,
    with_settings,
)
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.dispatch.database import DatabaseDispatcher
from crowdpatch.project import Project
from crowdpatch.server.platforms import register_worker
from crowdpatch.simulate.http import Http11, WorkerClient
from crowdpatch.store.db import ENV_SQLITE_SYNC, make_engine
from crowdpatch.store.statements import ENV_STATEMENT_COUNTS, read_statement_counts

PG_SYNCHRONOUS_COMMIT = {"full": "on", "normal": "on", "off": "off"}


def make_project(root: Path, data: tuple[Path, Path, Path], db_url: str | None, phase: str = "verify") -> Project:
    """The served project; ``phase`` "patch": its verification questions already answered (the steady state).

    A fresh project starts with one verification question per proposed cluster; closing the last
    one of an image creates its region's windows (the heaviest decision there is). After those, a
    study is patch answers (tens to hundreds per image), so a run of a few seconds on a fresh
    project measures mostly its first minutes; "patch" measures the rest.
    """

    def configure(config: ProjectConfig) -> None:
        # One window per screen (the paper's form): a few hundred answers per image, so the work does not
        # run out within a run (the grid presentation asks about five questions per image).
        config.patches.presentation = "single"

    project = served_project(root, data, db_url, "load", configure)
    if phase == "patch":
        answer_verification(project)
    return project


def answer_verification(project: Project, seed: int = 0) -> int:
    """Answer every verification question in-process, through the server's engine; how many answers.

    Two warm-up workers answer what they are handed (verification comes first) at random, each
    verdict agreed by both, until they are handed a patch question (which they answer too).
    """
    dispatcher = DatabaseDispatcher(project.sessions, project.id, project.config)
    workers = [register_worker(project.sessions, project.id, "simulated", f"warm-up-{i}", {}).id for i in range(2)]
    rng, verdicts, answers, active = random.Random(seed), {}, 0, list(workers)
    while active:
        for worker_id in list(active):
            task = dispatcher.next_task(worker_id)
            if task is None:
                active.remove(worker_id)
                continue
            verdict = verdicts.setdefault(task.task_id, rng.choice(["yes", "no"]))
            dispatcher.submit(
                worker_id, task.task_id, verdict, client_id=f"warm-up-{answers}", client_ms=1600, time_source="modeled"
            )
            answers += 1
            if task.kind != "verify":
                active.remove(worker_id)
    return answers


def split_cores(server_cores: str = "rest") -> tuple[set[int], set[int]]:
    """(server cores, load-generator core): the last core for the client; the rest for the server, or
    with ``server_cores`` "all" every core (the generator's included: it uses a fraction of its core)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    return (set(cores) if server_cores == "all" else set(cores[:-1])), {cores[-1]}


def serve(
    project: Project, processes: int, log: Path, env: dict[str, str], cores: set[int]
) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "crowdpatch",
        "serve",
        str(project.directory),
        "--port",
        str(port),
        "--workers",
        str(processes),
    ]
    child = subprocess.Popen(
        command,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
        preexec_fn=lambda: os.sched_setaffinity(0, cores),  # uvicorn's worker processes inherit it
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=1):
                settle(child.pid)
                return child, port
        except OSError:
            time.sleep(0.2)
    child.kill()
    raise RuntimeError(f"server did not start, see {log}")


def _cpu_seconds_of(wanted: Callable[[int, int, str], bool]) -> float:
    """User + system CPU seconds so far of the processes for which ``wanted(pid, ppid, name)`` holds,
    with their children that have exited (PostgreSQL's connections that a pool closed, say)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, fields = (entry / "stat").read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        fields = fields.split()
        if wanted(int(entry.name), int(fields[1]), head.partition("(")[2]):
            total += sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and its children so far (the server's own work).

    The machine is shared, so answers/s moves with other people's load; the server's CPU time
    per answer does much less, and is printed beside it.
    """
    return _cpu_seconds_of(lambda pid, ppid, _name: root in (pid, ppid))


def database_cpu_seconds() -> float:
    """CPU seconds of PostgreSQL's processes so far (on this machine, on the same two cores as the rest)."""
    return _cpu_seconds_of(lambda _pid, _ppid, name: name == "postgres")


def settle(pid: int, timeout: float = 60.0) -> None:
    """Wait until the server's processes are idle: every worker process has imported and opened the project."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.05:
            return
        before = now


@dataclass
class ClientReport:
    answers: int = 0
    conflicts: int = 0
    errors: int = 0
    exhausted: int = 0
    """Workers that got 204 (no work left) before the time was up."""
    stopped: int = 0
    """Workers stopped by the quality checks (403) before the time was up: their loop ends there."""
    error_statuses: Counter = field(default_factory=Counter)
    """HTTP status of each error (599: the connection dropped)."""
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    """The generator's own CPU time (opening the sessions included)."""


async def _worker(
    port: int,
    name: str,
    api_key: str,
    project: str,
    ready: asyncio.Event,
    stop: list[float],
    report: ClientReport,
    opened: list[int],
    rng: random.Random,
    piggyback: bool,
) -> None:
    client = WorkerClient(Http11(port))  # no retries: an error is counted, and the worker goes on
    step = await client.open_session(project, name, api_key)
    if step.outcome != "opened":
        raise RuntimeError(f"session: {step.status} {step.body}")
    opened[0] += 1
    await ready.wait()
    count = 0
    clock = time.perf_counter
    task: dict | None = None
    while clock() < stop[0]:
        if task is None:
            step = await client.next_task()
            report.latencies_ms.append(step.seconds * 1000)
            if step.outcome == "none":
                report.exhausted += 1
                return
            if step.outcome == "stopped":  # by the quality checks (random answers make constant runs now and then)
                report.stopped += 1
                return
            if step.outcome != "task":
                report.errors += 1
                report.error_statuses[step.status] += 1
                await asyncio.sleep(0.01)
                continue
            task = step.task
        if task["kind"] == "grid":
            answer = {"cells": [i for i in range((task.get("grid_size") or 1) ** 2) if rng.random() < 0.3]}
        else:
            answer = "yes" if rng.random() < 0.5 else "no"
        count += 1
        step = await client.answer(task["task_id"], answer, f"{name}:{count}", 1600, next=piggyback)
        task = None
        if clock() < stop[0]:
            report.latencies_ms.append(step.seconds * 1000)
            if step.outcome in ("stored", "replayed"):
                report.answers += 1
                if piggyback:
                    task = step.task
                    if step.following == "none":
                        report.exhausted += 1
                        return
                    if step.following == "stopped":
                        report.stopped += 1
                        return
            elif step.outcome == "conflict":
                report.conflicts += 1
            else:
                report.errors += 1
                report.error_statuses[step.status] += 1


async def drive(
    port: int,
    api_key: str,
    project: str,
    workers: int,
    seconds: float,
    seed: int,
    opened_all: Any = None,
    go: Any = None,
    piggyback: bool = False,
) -> ClientReport:
    """Open every worker's session, then run the next-task + answer loop of all of them for ``seconds``.

    ``piggyback``: each answer asks for the next question in the same request (``"next": true``),
    one round trip per answer instead of two.

    ``opened_all`` / ``go`` (multiprocessing events) let the parent start its CPU clock once the
    sessions are open, so opening them is not counted per answer.
    """
    report = ClientReport()
    ready, stop, opened = asyncio.Event(), [float("inf")], [0]
    rng = random.Random(seed)
    tasks = [
        asyncio.create_task(
            _worker(port, f"load-{seed}-{i:04d}", api_key, project, ready, stop, report, opened, rng, piggyback)
        )
        for i in range(workers)
    ]
    while opened[0] < workers:
        await asyncio.sleep(0.05)
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()
    if opened_all is not None:
        opened_all.set()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
    started = time.perf_counter()
    stop[0] = started + seconds
    ready.set()
    await asyncio.gather(*tasks)
    report.seconds = min(time.perf_counter(), stop[0]) - started
    return report


def _client_process(queue: multiprocessing.Queue, cores: set[int], *args) -> None:
    os.sched_setaffinity(0, cores)
    # uvloop (a server dependency already): the generator's CPU per request about halves, which matters
    # where the server shares the generator's core (--server-cores all).
    import uvloop

    report = uvloop.run(drive(*args))
    report.cpu_seconds = time.process_time()
    queue.put(report)


def run(
    project: Project,
    processes: int,
    workers: int,
    seconds: float,
    log: Path,
    env: dict[str, str],
    piggyback: bool,
    server_cores: str = "rest",
) -> dict:
    """One run; its figures as :func:`record` reads them. The server's SQL statements are counted
    into a folder beside its log."""
    server_cores, client_cores = split_cores(server_cores)
    counts = log.with_suffix(".statements")
    child, port = serve(project, processes, log, {**env, ENV_STATEMENT_COUNTS: str(counts)}, server_cores)
    try:
        fork = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue = fork.Queue()
        opened_all, go = fork.Event(), fork.Event()
        args = (
            port,
            project.config.server.effective_api_key(),
            project.config.name,
            workers,
            seconds,
            workers,
            opened_all,
            go,
            piggyback,
        )
        client = fork.Process(target=_client_process, args=(queue, client_cores, *args))
        client.start()
        while not opened_all.wait(timeout=1):
            if not client.is_alive():
                raise RuntimeError(f"the load generator stopped while opening sessions (server log: {log})")
        connections: list[int] = []
        # Read near the run's end: the split the processes served most of the run with.
        near_end = threading.Timer(0.9 * seconds, lambda: connections.extend(connections_per_process(port)))
        cpu_before, database_before = cpu_seconds(child.pid), database_cpu_seconds()
        statements_before = read_statement_counts(counts)
        steal = StealMeter()
        go.set()
        near_end.start()
        report: ClientReport = queue.get(timeout=seconds + 300)
        near_end.join()
        cpu = cpu_seconds(child.pid) - cpu_before
        database_cpu = database_cpu_seconds() - database_before
        statements = read_statement_counts(counts) - statements_before
        steal_percent = steal.percent()
        client.join()
    finally:
        child.terminate()
        child.wait(20)
    latencies = np.array(report.latencies_ms)
    return {
        "answers": report.answers,
        "answers_per_s": report.answers / report.seconds,
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "p99": float(np.percentile(latencies, 99)),
        "conflicts": report.conflicts,
        "errors": report.errors,
        "error_statuses": ", ".join(f"{count} x {status}" for status, count in sorted(report.error_statuses.items())),
        "exhausted": report.exhausted,
        "stopped": report.stopped,
        "server_cpu_ms_per_answer": 1000 * cpu / max(report.answers, 1),
        "client_cpu_ms_per_answer": 1000 * report.cpu_seconds / max(report.answers, 1),
        "database_cpu_ms_per_answer": 1000 * database_cpu / max(report.answers, 1),
        "statements_per_answer": statements / max(report.answers, 1),
        "steal_percent": steal_percent,
        "connections": connections,
    }


def record(backend: str, processes: int, workers: int, phase: str, loop: str, sync: str, result: dict) -> dict:
    """One run as the JSON object ``--json`` writes and the printed row reads: the fixed keys first."""
    return {
        "backend": backend,
        "processes": processes,
        "workers": workers,
        "phase": phase,
        "loop": loop,
        "answers_per_s": result["answers_per_s"],
        "p50_ms": result["p50"],
        "p95_ms": result["p95"],
        "p99_ms": result["p99"],
        "errors": result["errors"],
        "server_cpu_ms_per_answer": result["server_cpu_ms_per_answer"],
        # SQLite runs inside the server's processes: its CPU is in theirs; PostgreSQL's is its own processes'.
        "db_cpu_ms_per_answer": result["database_cpu_ms_per_answer"] if backend == "postgresql" else None,
        "statements_per_answer": result["statements_per_answer"],
        "sync": sync,
        "answers": result["answers"],
        "conflicts": result["conflicts"],
        "error_statuses": result["error_statuses"],
        "exhausted": result["exhausted"],
        "stopped": result["stopped"],
        "client_cpu_ms_per_answer": result["client_cpu_ms_per_answer"],
        "load_average": os.getloadavg()[0],
        "steal_percent": result["steal_percent"],
        "connections_per_process": result["connections"],
    }


TABLE_HEADER = (
    "| database | processes | phase | sync | loop | workers | answers | answers/s | p50 ms | p95 ms | p99 ms "
    "| server CPU ms/answer | PostgreSQL CPU ms/answer | SQL statements/answer | generator CPU ms/answer "
    "| 409 | errors | load avg | steal % | connections per process |\n"
    "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def table_row(run: dict) -> str:
    """The printed Markdown row of one :func:`record`."""
    setting = (
        f"synchronous={run['sync'].upper()}"
        if run["backend"] == "sqlite"
        else f"synchronous_commit={PG_SYNCHRONOUS_COMMIT[run['sync']]}"
    )
    exhausted = " (work ran out)" if run["exhausted"] else ""
    exhausted += f" ({run['stopped']} workers stopped)" if run["stopped"] else ""
    errors = f"{run['errors']} ({run['error_statuses']})" if run["errors"] else "0"
    database = "-" if run["db_cpu_ms_per_answer"] is None else f"{run['db_cpu_ms_per_answer']:.2f}"
    return (
        f"| {run['backend']} | {run['processes']} | {run['phase']} | {setting} | {run['loop']} | {run['workers']} | "
        f"{run['answers']}{exhausted} | "
        f"{run['answers_per_s']:.0f} | {run['p50_ms']:.1f} | {run['p95_ms']:.1f} | {run['p99_ms']:.1f} | "
        f"{run['server_cpu_ms_per_answer']:.2f} | {database} | {run['statements_per_answer']:.1f} | "
        f"{run['client_cpu_ms_per_answer']:.2f} | {run['conflicts']} | {errors} | "
        f"{run['load_average']:.2f} | {run['steal_percent']:.1f} | "
        f"{'/'.join(str(n) for n in run['connections_per_process']) or '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--images", type=int, default=600, help="Built-in images (64 px): enough work not to run out.")
    parser.add_argument("--sync", nargs="+", choices=["full", "normal", "off"], default=["normal"])
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["sqlite:1", "postgresql:2", "postgresql:4"],
        help="DATABASE:PROCESSES, DATABASE being sqlite or postgresql.",
    )
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument(
        "--server-cores",
        choices=["rest", "all"],
        default="rest",
        help="rest: the server on every core but the load generator's (one on a 2-core machine); "
        "all: on every core, sharing the generator's (for several server processes).",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["verify", "patch"],
        default=["verify", "patch"],
        help="verify: a fresh project (its verification questions first); patch: those answered "
        "beforehand, so the run is patch answers (the bulk of a study).",
    )
    parser.add_argument(
        "--loops",
        nargs="+",
        choices=["separate", "piggyback"],
        default=["separate", "piggyback"],
        help="separate: GET /tasks/next then POST /answers (two round trips per answer); "
        'piggyback: each answer asks for the next question ("next": true), one round trip.',
    )
    parser.add_argument("--json", type=Path, help="Also append each run here as it ends: one JSON object per line.")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="crowdpatch-load-"))
    files = builtin_files(out, args.images)
    server_cores, client_cores = split_cores(args.server_cores)
    print(
        f"host: {cpu_model()}; cores: {os.cpu_count()} "
        f"(server on {sorted(server_cores)}, load generator on {sorted(client_cores)}); "
        f"{args.seconds:.0f} s per run; {args.images} images of 64 px; load average before: {os.getloadavg()[0]:.2f}"
    )
    print(TABLE_HEADER)
    for spec in args.backends:
        backend, _, processes = spec.partition(":")
        for phase, sync, loop, workers in itertools.product(args.phases, args.sync, args.loops, args.workers):
            tag = f"{backend}-{processes}-{phase}-{sync}-{loop}-{workers}"
            db_url, schema, env = None, None, {}
            if backend == "postgresql":
                schema = f"load_{uuid.uuid4().hex[:8]}"
                with make_engine(args.postgres).begin() as connection:
                    connection.execute(text(f"CREATE SCHEMA {schema}"))
                commits = PG_SYNCHRONOUS_COMMIT[sync]
                db_url = with_settings(args.postgres, search_path=schema, synchronous_commit=commits)
            else:
                env[ENV_SQLITE_SYNC] = sync.upper()
            project = make_project(out / tag, files, db_url, phase)
            project.close()
            result = run(
                project,
                int(processes or 1),
                workers,
                args.seconds,
                out / f"{tag}.log",
                env,
                loop == "piggyback",
                args.server_cores,
            )
            row = record(backend, int(processes or 1), workers, phase, loop, sync, result)
            print(table_row(row), flush=True)
            if args.json:
                with args.json.open("a", encoding="utf-8") as out_file:
                    out_file.write(json.dumps(row) + "\n")
            if schema:
                with make_engine(args.postgres).begin() as connection:
                    connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
