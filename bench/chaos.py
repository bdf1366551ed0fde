"""Chaos: simulated HTTP workers against `crowdpatch serve`, killed with SIGKILL at random moments (not a test).

An answer counts as acknowledged when the server replied 201 (stored) or 200 (the same
``client_id`` was already stored). Each worker retries a failed request with the same body (the
same ``client_id``) until the server is back, so a kill between commit and reply must come back as
a 200, and a kill before commit as a 201. At the end every acknowledged answer is looked up in the
store. Prints one Markdown row per backend (and the figures as JSON with ``--json``):

    python bench/chaos.py [--backends sqlite postgresql] [--kills 5] [--workers 16] [--processes 2]
                          [--postgres postgresql://postgres@127.0.0.1:5432/test] [--json out.json]
    python bench/chaos.py --phase disk-full [--fills 4] [--hold 3] [--disk-mb 2]

The disk-full phase (SQLite) serves a project kept on a tmpfs of ``--disk-mb`` MB (mounting one
needs root; elsewhere the phase is skipped with the reason): ``--fills`` times, a ballast file fills
the disk to the last byte, stays ``--hold`` seconds (every other time the server is SIGKILLed while
the disk is full and started again on the still-full disk), and is deleted; the server must answer
503 meanwhile, write again by itself once space is back, and lose no acknowledged answer. It adds:
fills; unavailable: 503 replies (each retried); the server log's "store cannot write" and "store
writes again" lines; tracebacks in it.

acknowledged: answers the server acknowledged; stored: of those, found in the store (same
client id, worker and task); lost: acknowledged but not stored; duplicated: store rows beyond one
per client id or per (worker, question); unacknowledged stored: rows of ours that no reply
acknowledged (0 unless a worker gave up); interrupted: answer posts that failed at least once
(a kill hit them); replayed: interrupted posts whose retry found the answer already committed (200);
over-asked: questions holding more answers than wanted (gold aside); stalled images: not done, yet
without an open question (a decision lost between two processes leaves an image so).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
from sqlalchemy import select, text

from benchkit import POSTGRES, free_port, served_project, with_settings
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.votes import votes_target
from crowdpatch.datasets import BenchmarkSpec, generate_benchmark
from crowdpatch.project import Project
from crowdpatch.simulate.http import HttpxTransport, Retry, WorkerClient
from crowdpatch.store.db import make_engine
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow, WorkerRow

GIVE_UP_SECONDS = 60.0
"""A request that finds no server for this long ends the run with an error: the restart failed."""


@dataclass
class ChaosReport:
    backend: str
    processes: int
    workers: int
    kills: int = 0
    acknowledged: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    unacknowledged_stored: int = 0
    interrupted: int = 0
    replayed: int = 0
    conflicts: int = 0
    over_asked: int = 0
    stalled_images: int = 0
    seconds: float = 0.0
    failed_requests: int = 0
    """Requests that got no reply (connection refused or cut) or a 5xx, each retried."""
    server_errors: int = 0
    """Of those, 5xx replies other than 503: a server that was up and failed (a kill gives no reply at all)."""
    unavailable: int = 0
    """503 replies: the store could not write (a full disk); retried, as the server asks."""
    fills: int = 0
    """Times the disk was filled (the disk-full phase)."""
    cannot_write_lines: int = 0
    writes_again_lines: int = 0
    tracebacks: int = 0
    """In the server's log."""
    acks: dict[str, int] = field(default_factory=dict, repr=False)
    """client id -> task id of every acknowledged answer."""


def make_project(root: Path, data: tuple[Path, Path, Path], db_url: str | None) -> Project:
    def configure(config: ProjectConfig) -> None:
        config.crowd.lease_seconds = 60
        # (no gold: random answers would fail it and get workers stopped, whose answers then stop counting)
        config.patches.presentation = "single"  # many small questions: the most leasing and answering per second

    return served_project(root, data, db_url, "chaos", configure)


class Server:
    """`crowdpatch serve` in its own process group, so SIGKILL takes uvicorn's worker processes with it."""

    def __init__(self, directory: Path, port: int, processes: int, log: Path):
        self.command = [
            sys.executable,
            "-m",
            "crowdpatch",
            "serve",
            str(directory),
            "--port",
            str(port),
            "--workers",
            str(processes),
        ]
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log, "a")
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        deadline = time.monotonic() + GIVE_UP_SECONDS
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    # (Re)launch; a launch right after a kill may still find the port taken and exit.
                    self.process = subprocess.Popen(
                        self.command,
                        stdin=subprocess.DEVNULL,
                        stdout=self.log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                try:
                    if (await client.get(self.url + "/openapi.json")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.command}")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def random_answer(task: dict[str, Any], rng: random.Random) -> Any:
    """Durability does not care what is answered; yes often enough that questions subdivide and work lasts."""
    if task["kind"] == "grid":
        return {"cells": [i for i in range((task.get("grid_size") or 1) ** 2) if rng.random() < 0.3]}
    if task["kind"] == "polygon":
        x0, y0, x1, y1 = task["box"]
        return {"polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}
    return "yes" if rng.random() < 0.6 else "no"


CHAOS_RETRY = Retry(attempts=None, give_up_seconds=GIVE_UP_SECONDS, first_delay=0.02, max_delay=0.5)
"""Every request is sent again, the very same, until the server is back (or for GIVE_UP_SECONDS)."""


async def worker(
    http: httpx.AsyncClient, name: str, project: str, api_key: str, report: ChaosReport, stop: asyncio.Event, seed: int
) -> None:
    rng = random.Random(seed)
    client = WorkerClient(HttpxTransport(http), CHAOS_RETRY)
    try:
        await _work(client, rng, name, project, api_key, report, stop)
    finally:
        report.failed_requests += client.failed_requests
        report.server_errors += client.server_errors
        report.unavailable += client.unavailable


async def _work(
    client: WorkerClient,
    rng: random.Random,
    name: str,
    project: str,
    api_key: str,
    report: ChaosReport,
    stop: asyncio.Event,
) -> None:
    opened = await client.open_session(project, name, api_key)
    if opened.outcome != "opened":
        raise RuntimeError(f"{name}: no session ({opened.status} {opened.outcome})")
    count = 0
    while not stop.is_set():  # checked only between answers: an answer in flight is always seen through
        step = await client.next_task()
        if step.outcome in ("none", "stopped"):
            return
        if step.outcome == "busy":
            await asyncio.sleep(0.05)
            continue
        if step.outcome != "task":
            raise RuntimeError(f"{name}: GET /tasks/next answered {step.status} ({step.outcome})")
        task = step.task
        client_id = f"{name}:{count}"
        count += 1
        posted = await client.answer(task["task_id"], random_answer(task, rng), client_id, rng.randint(800, 3000))
        report.interrupted += posted.failures > 0
        if posted.outcome in ("stored", "replayed"):
            report.acks[client_id] = int(task["task_id"])
            report.replayed += posted.failures > 0 and posted.outcome == "replayed"
        elif posted.outcome == "conflict":
            report.conflicts += 1
        else:
            raise RuntimeError(f"{name}: POST /answers answered {posted.status} ({posted.outcome})")


async def run_crowd(
    server: Server, project: Project, report: ChaosReport, seed: int, disturb: Callable[[], Awaitable[None]]
) -> None:
    """The simulated crowd at work while ``disturb()`` runs (kills, a full disk); then every worker stops."""
    stop = asyncio.Event()
    await server.start()
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=report.workers, max_keepalive_connections=report.workers)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30.0) as client:
        crowd = asyncio.gather(
            *(
                worker(
                    client,
                    f"chaos-{seed}-{i:03d}",
                    project.config.name,
                    project.config.server.effective_api_key(),
                    report,
                    stop,
                    seed * 1000 + i,
                )
                for i in range(report.workers)
            )
        )
        await disturb()
        stop.set()
        await crowd
    report.seconds = time.perf_counter() - started
    report.acknowledged = len(report.acks)


async def run_chaos(
    server: Server,
    project: Project,
    report: ChaosReport,
    kills: int,
    gap: tuple[float, float],
    tail_seconds: float,
    seed: int,
) -> None:
    rng = random.Random(seed)

    async def kill_and_restart() -> None:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(*gap))
            server.kill()
            report.kills += 1
            await server.start()
        await asyncio.sleep(tail_seconds)

    await run_crowd(server, project, report, seed, kill_and_restart)


def fill(disk: Path) -> Path:
    """A ballast file that takes every free byte of ``disk`` (the writes stop at ENOSPC)."""
    ballast = disk / "ballast"
    chunk = b"\0" * 65536
    with open(ballast, "ab", buffering=0) as out:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    out.write(chunk[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return ballast


async def run_disk_full(
    server: Server,
    project: Project,
    report: ChaosReport,
    disk: Path,
    fills: int,
    hold_seconds: float,
    gap: tuple[float, float],
    tail_seconds: float,
    seed: int,
) -> None:
    rng = random.Random(seed)

    async def fill_and_free() -> None:
        for round in range(fills):
            await asyncio.sleep(rng.uniform(*gap))
            ballast = fill(disk)
            report.fills += 1
            if round % 2 == 1:
                # A kill while the disk is full: what was acknowledged before must survive it, and the
                # server must start again on the still-full disk (answering 503) without any space freed.
                await asyncio.sleep(hold_seconds / 2)
                server.kill()
                report.kills += 1
                await server.start()
                await asyncio.sleep(hold_seconds / 2)
            else:
                await asyncio.sleep(hold_seconds)
            ballast.unlink()
        await asyncio.sleep(tail_seconds)

    await run_crowd(server, project, report, seed, fill_and_free)


def read_log(report: ChaosReport, log: Path) -> None:
    text = log.read_text(errors="replace")
    report.cannot_write_lines = text.count("store cannot write")
    report.writes_again_lines = text.count("store writes again")
    report.tracebacks = text.count("Traceback")


def audit(project: Project, report: ChaosReport, prefix: str) -> None:
    """Compare every acknowledged answer with the store; count duplicates and over-asked questions."""
    with project.sessions() as session:
        rows = session.execute(
            select(AnswerRow.client_id, AnswerRow.task_id, WorkerRow.external_id)
            .join(WorkerRow, WorkerRow.id == AnswerRow.worker_id)
            .where(WorkerRow.external_id.startswith(prefix))
        ).all()
        values: dict[int, list] = defaultdict(list)
        for task_id, value in session.execute(select(AnswerRow.task_id, AnswerRow.value).order_by(AnswerRow.id)):
            values[task_id].append(value)
        tasks = session.scalars(select(TaskRow).where(TaskRow.kind != "gold")).all()
        stages = dict(session.execute(select(ImageRow.id, ImageRow.stage)).all())
    open_images = {task.image_id for task in tasks if task.state == "open" and task.kind != "polygon"}
    report.stalled_images = sum(
        1 for image_id, stage in stages.items() if stage in ("verify", "patch") and image_id not in open_images
    )
    by_client = Counter(client_id for client_id, _, _ in rows)
    by_pair = Counter((worker, task_id) for _, task_id, worker in rows)
    stored = {client_id: task_id for client_id, task_id, _ in rows}
    report.stored = sum(1 for client_id, task_id in report.acks.items() if stored.get(client_id) == task_id)
    report.lost = report.acknowledged - report.stored
    report.duplicated = sum(n - 1 for n in by_client.values()) + sum(n - 1 for n in by_pair.values())
    report.unacknowledged_stored = sum(1 for client_id in stored if client_id not in report.acks)
    early_stop = project.config.crowd.early_stop
    report.over_asked = sum(
        1
        for task in tasks
        if not all(
            k < votes_target(values[task.id][:k], task.votes_wanted, early_stop) for k in range(len(values[task.id]))
        )
    )


def chaos(
    backend: str,
    processes: int,
    workers: int,
    kills: int,
    gap: tuple[float, float],
    tail_seconds: float,
    images: int,
    postgres: str,
    out: Path,
    seed: int,
) -> ChaosReport:
    data_dir = out / "data"
    if not (data_dir / "labels.csv").exists():
        generate_benchmark(data_dir, BenchmarkSpec(n_images=images, size=64, seed=0))
    files = (data_dir / "images", data_dir / "labels.csv", data_dir / "masks")
    schema, db_url = None, None
    if backend == "postgresql":
        schema = f"chaos_{uuid.uuid4().hex[:8]}"
        with make_engine(postgres).begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        db_url = with_settings(postgres, search_path=schema)
    tag = f"{backend}-{processes}-{uuid.uuid4().hex[:6]}"
    project = make_project(out / tag, files, db_url)
    project.close()
    report = ChaosReport(backend, processes, workers)
    server = Server(out / tag, free_port(), processes, out / f"{tag}.log")
    try:
        asyncio.run(run_chaos(server, project, report, kills, gap, tail_seconds, seed))
    finally:
        server.stop()
    reopened = Project.open(out / tag)
    try:
        audit(reopened, report, f"chaos-{seed}-")
    finally:
        reopened.close()
        if schema:
            with make_engine(postgres).begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    return report


def mount_small_disk(where: Path, megabytes: int) -> str | None:
    """A tmpfs of ``megabytes`` at ``where``; None, or why not (mounting needs root)."""
    where.mkdir(parents=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


def disk_full_chaos(
    workers: int,
    fills: int,
    hold_seconds: float,
    disk_mb: int,
    gap: tuple[float, float],
    tail_seconds: float,
    images: int,
    out: Path,
    seed: int,
) -> ChaosReport | str:
    """The disk-full phase on SQLite; its report, or why it cannot run here."""
    data_dir = out / "data"
    if not (data_dir / "labels.csv").exists():
        generate_benchmark(data_dir, BenchmarkSpec(n_images=images, size=64, seed=0))
    files = (data_dir / "images", data_dir / "labels.csv", data_dir / "masks")
    tag = f"disk-full-{uuid.uuid4().hex[:6]}"
    disk = out / tag
    why_not = mount_small_disk(disk, disk_mb)
    if why_not is not None:
        return why_not
    try:
        # Built on the ordinary disk (step 1's log would not fit), then copied onto the small one.
        project = make_project(out / f"{tag}-build", files, None)
        project.close()
        shutil.copytree(out / f"{tag}-build", disk / "project")
        report = ChaosReport("sqlite", 1, workers)
        log = out / f"{tag}.log"
        server = Server(disk / "project", free_port(), 1, log)
        try:
            asyncio.run(run_disk_full(server, project, report, disk, fills, hold_seconds, gap, tail_seconds, seed))
        finally:
            server.stop()
        read_log(report, log)
        reopened = Project.open(disk / "project")
        try:
            audit(reopened, report, f"chaos-{seed}-")
        finally:
            reopened.close()
        return report
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


COLUMNS = [
    "backend",
    "processes",
    "workers",
    "kills",
    "acknowledged",
    "stored",
    "lost",
    "duplicated",
    "unacknowledged_stored",
    "interrupted",
    "replayed",
    "conflicts",
    "over_asked",
    "stalled_images",
    "failed_requests",
    "server_errors",
    "seconds",
]
DISK_FULL_COLUMNS = [
    "fills",
    "kills",
    "acknowledged",
    "stored",
    "lost",
    "duplicated",
    "unacknowledged_stored",
    "unavailable",
    "server_errors",
    "cannot_write_lines",
    "writes_again_lines",
    "tracebacks",
    "stalled_images",
    "seconds",
]


def print_table(columns: list[str], reports: list[ChaosReport]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join(["---"] + ["---:"] * (len(columns) - 1)) + " |")
    for report in reports:
        row = asdict(report)
        print("| " + " | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["kill", "disk-full"], default="kill")
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--processes", type=int, default=2, help="Server processes on PostgreSQL (SQLite: always 1).")
    parser.add_argument(
        "--gap", type=float, nargs=2, default=[1.0, 3.0], help="Seconds between a restart and the next kill (uniform)."
    )
    parser.add_argument("--tail", type=float, default=2.0, help="Seconds of work after the last restart.")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--fills", type=int, default=4, help="disk-full: times the disk is filled.")
    parser.add_argument("--hold", type=float, default=3.0, help="disk-full: seconds the disk stays full each time.")
    parser.add_argument("--disk-mb", type=int, default=2, help="disk-full: size of the tmpfs the project is kept on.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="crowdpatch-chaos-"))
    if args.phase == "disk-full":
        print(
            f"cores: {os.cpu_count()}; SQLite on a {args.disk_mb} MB tmpfs filled {args.fills} times for "
            f"{args.hold:g} s, {args.gap[0]:g}-{args.gap[1]:g} s apart, SIGKILL on every second fill; "
            f"{args.workers} workers; {args.images} images of 64 px; logs in {out}"
        )
        report = disk_full_chaos(
            args.workers, args.fills, args.hold, args.disk_mb, tuple(args.gap), args.tail, args.images, out, args.seed
        )
        if isinstance(report, str):
            print(f"disk-full phase skipped: {report}")
            return
        print_table(DISK_FULL_COLUMNS, [report])
        if args.json:
            args.json.write_text(json.dumps([{c: asdict(report)[c] for c in DISK_FULL_COLUMNS}], indent=2))
        return
    print(
        f"cores: {os.cpu_count()}; {args.kills} SIGKILLs per run, {args.gap[0]:g}-{args.gap[1]:g} s apart; "
        f"{args.workers} workers; {args.images} images of 64 px; logs in {out}"
    )
    reports = []
    for backend in args.backends:
        processes = args.processes if backend == "postgresql" else 1
        report = chaos(
            backend,
            processes,
            args.workers,
            args.kills,
            tuple(args.gap),
            args.tail,
            args.images,
            args.postgres,
            out,
            args.seed,
        )
        reports.append(report)
    print_table(COLUMNS, reports)
    if args.json:
        args.json.write_text(json.dumps([{c: asdict(r)[c] for c in COLUMNS} for r in reports], indent=2))


if __name__ == "__main__":
    main()
