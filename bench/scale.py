"""Growth of a study with its size: 1k, 10k and 100k images on SQLite and PostgreSQL (not a test).

Each size is a study built at a real study's ratios without running a crowd over all of it: a
template study of ``--pool`` built-in benchmark images (128 px, one window per screen, the paper's
form and the most rows per vote) is proposed and answered once by simulated workers, in process,
as ``crowdpatch simulate`` does; its rows (images, regions, questions, answers, workers) are then
copied as many times as the size needs, by bulk inserts through SQLAlchemy core, every copy's
images being hard links to the template's files under names of their own. Workers grow with the
study (one per ``--images-per-worker`` images, each standing for one of the template's workers, so
spammers stay spammers); answer times are shifted so that the study ends now. The last
``--open-share`` of the images are added but not proposed, as a study still taking in images.

For each study it measures:

- ``propose``: step 1 on the images not proposed yet, with the spectral-residual saliency at one
  128 px scale (a real map, cheaply); it creates the verification questions served next;
- ``aggregate``: the aggregation of every vote (:class:`MaskBuilder`), which ``masks`` runs once and
  ``report`` twice (its sample figures build their own);
- ``masks`` (``crowdpatch masks``: PNG export) and ``report`` (``crowdpatch report``: masks without
  export, summary, HTML page with its sample figures) per image with a mask, for the whole study:
  the aggregation, plus the per-image part timed on ``--sample`` images spread over the study (every
  k-th) times the images, plus (report) the summary and the page;
- ``GET /tasks/next`` and ``POST /answers`` through the real application (starlette's TestClient,
  in process), ``--requests`` of each by simulated workers, p50 and p95;
- ``GET /progress`` and ``GET /dashboard`` (the requester's), ``--polls`` each, p50; both answer
  the figures their background refresh last computed (the first request computes them: the
  dashboard's max), and ``progress refresh s`` and ``dashboard refresh s`` are what one such
  computation costs;
- the database's size (SQLite: the file and its WAL; PostgreSQL: the schema's tables and indexes).

On PostgreSQL each study is a schema of ``--postgres``, analyzed after the copy (as autovacuum would);
the schema is dropped afterwards unless ``--keep``.

    python bench/scale.py [--images 1000 10000 100000] [--backends sqlite postgresql] [--json rows.json] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from starlette.testclient import TestClient

from benchkit import POSTGRES, builtin_files, cpu_model, markdown_table, with_settings, write_section
from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import BenchmarkSpec, generate_benchmark, load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.masks.build import MaskBuilder, build_masks
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.server.app import create_app
from crowdpatch.simulate.run import run_simulation
from crowdpatch.store.db import make_engine
from crowdpatch.store.models import AnswerRow, ImageRow, RegionRow, TaskRow, WorkerRow
from crowdpatch.summary import summarize
from crowdpatch.workflow import write_outputs
from load import make_project

SECTION = "scale"
IMAGE_SIDE = 128
"""Template images' side: at 64 px a region's second-level windows fall under ``min_side`` and are never asked."""
CHUNK_ROWS = 50_000
"""Rows per bulk insert."""
API_KEY = "scale-bench"


def template_config(name: str, images: Path, masks: Path, db_url: str | None = None) -> ProjectConfig:
    """The studied configuration: defaults, but one window per screen and a one-scale spectral saliency."""
    config = ProjectConfig(name=name, target="object", db_url=db_url, images_dir=str(images), masks_dir=str(masks))
    config.patches.presentation = "single"
    config.saliency.backend = "spectral"
    config.saliency.scales = [IMAGE_SIDE]
    config.server.api_key = API_KEY
    return config


def template_study(directory: Path, pool: int, seed: int = 0) -> Project:
    """A study of ``pool`` benchmark images, proposed and answered by simulated workers (made once, then reused)."""
    project_dir = directory / f"template-{pool}-s{seed}"
    if (project_dir / "answered").is_file():
        return Project.open(project_dir)
    shutil.rmtree(project_dir, ignore_errors=True)
    data = project_dir / "data"
    labels = generate_benchmark(data, BenchmarkSpec(n_images=pool, size=IMAGE_SIDE, seed=seed))
    project = Project.create(project_dir, template_config("template", data / "images", data / "masks"))
    add_images(project, load_folder_dataset(data / "images", labels, data / "masks").records)
    propose(project)
    run_simulation(project)
    (project_dir / "answered").touch()
    return project


def _rows(project: Project, table: Table, where: Any) -> list[dict[str, Any]]:
    with project.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(select(table).where(where).order_by(table.c.id))]


@dataclass
class Template:
    """The template study's rows, read once."""

    images: list[dict[str, Any]]
    regions: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    workers: list[dict[str, Any]]

    @classmethod
    def read(cls, project: Project) -> "Template":
        images = _rows(project, ImageRow.__table__, ImageRow.project_id == project.id)
        ids = [image["id"] for image in images]
        tasks = _rows(project, TaskRow.__table__, TaskRow.project_id == project.id)
        task_ids = [task["id"] for task in tasks]
        return cls(
            images,
            _rows(project, RegionRow.__table__, RegionRow.image_id.in_(ids)),
            tasks,
            _rows(project, AnswerRow.__table__, AnswerRow.task_id.in_(task_ids)),
            _rows(project, WorkerRow.__table__, WorkerRow.project_id == project.id),
        )

    def span(self) -> float:
        """Seconds from the template's first question shown to its last answer."""
        return max(a["answered_at"] for a in self.answers) - min(a["shown_at"] for a in self.answers)


class BulkWriter:
    """Rows gathered per table and inserted ``CHUNK_ROWS`` at a time, parents before children."""

    ORDER = (ImageRow.__table__, RegionRow.__table__, TaskRow.__table__, AnswerRow.__table__)

    def __init__(self, connection: Any):
        self.connection = connection
        self.pending: dict[Table, list[dict[str, Any]]] = {table: [] for table in self.ORDER}

    def add(self, table: Table, rows: list[dict[str, Any]]) -> None:
        self.pending[table] += rows
        if len(self.pending[table]) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        for table in self.ORDER:  # a chunk of children never lands before its parents
            if self.pending[table]:
                self.connection.execute(insert(table), self.pending[table])
                self.pending[table] = []


@dataclass
class BuiltStudy:
    project: Project
    images: int
    open_images: int
    questions: int
    answers: int
    workers: int
    seconds: float


def build_study(
    template: Template,
    directory: Path,
    n_images: int,
    db_url: str | None,
    open_share: float,
    images_per_worker: int,
    seed: int = 0,
) -> BuiltStudy:
    """A study of ``n_images`` made of copies of ``template``; the last ``open_share`` (at least 16) not proposed."""
    started = time.perf_counter()
    links = directory / "images"
    links.mkdir(parents=True)
    first = template.images[0]
    config = template_config(f"scale-{n_images}", links, Path(first["mask_path"]).parent, db_url)
    config.simulation.seed = seed
    project = Project.create(directory / "project", config)
    pool = len(template.images)
    n_open = min(n_images, max(16, round(n_images * open_share)))
    n_done = n_images - n_open
    copies = -(-n_done // pool)
    per_worker_copy = max(1, round(images_per_worker * len(template.workers) / pool))
    groups = max(1, -(-copies // per_worker_copy))
    """Each template worker stands for ``groups`` study workers; a copy's answers go to one group."""
    n_workers = groups * len(template.workers)
    span = template.span() if template.answers else 0.0
    now = time.time()
    offsets = {name: 0 for name in ("image", "region", "task")}
    with project.engine.begin() as connection:
        worker_ids = _insert_workers(connection, project.id, template.workers, groups, copies, per_worker_copy)
        ids = {name: _max_id(connection, table) for name, table in _ID_TABLES.items()}
        offsets = dict(ids)
        writer = BulkWriter(connection)
        task_count = answer_count = 0
        given: Counter[int] = Counter()
        for copy in range(copies):
            take = min(pool, n_done - copy * pool)
            images = template.images[:take]
            kept = {image["id"] for image in images}
            image_of = {image["id"]: offsets["image"] + index + 1 for index, image in enumerate(images)}
            writer.add(ImageRow.__table__, [_copy_image(image, image_of, project.id, links, copy) for image in images])
            regions = [region for region in template.regions if region["image_id"] in kept]
            region_of = {region["id"]: offsets["region"] + index + 1 for index, region in enumerate(regions)}
            writer.add(
                RegionRow.__table__,
                [{**r, "id": region_of[r["id"]], "image_id": image_of[r["image_id"]]} for r in regions],
            )
            tasks = [task for task in template.tasks if task["image_id"] in kept]
            task_of = {task["id"]: offsets["task"] + index + 1 for index, task in enumerate(tasks)}
            writer.add(
                TaskRow.__table__, [_copy_task(task, task_of, region_of, image_of, project.id) for task in tasks]
            )
            group = copy // per_worker_copy
            shift = now - copies * span + copy * span
            answers = [
                {
                    **{key: value for key, value in answer.items() if key != "id"},
                    "task_id": task_of[answer["task_id"]],
                    "worker_id": worker_ids[(answer["worker_id"], group)],
                    "client_id": f"{copy}-{answer['client_id']}",
                    "shown_at": answer["shown_at"] + shift,
                    "answered_at": answer["answered_at"] + shift,
                }
                for answer in template.answers
                if answer["task_id"] in task_of
            ]
            writer.add(AnswerRow.__table__, answers)
            given.update(answer["worker_id"] for answer in answers)
            offsets["image"] += len(images)
            offsets["region"] += len(regions)
            offsets["task"] += len(tasks)
            task_count += len(tasks)
            answer_count += len(answers)
        opened = [template.images[i % pool] for i in range(n_open)]
        image_of = {}
        writer.add(
            ImageRow.__table__,
            [
                {
                    **_copy_image(
                        image, {image["id"]: offsets["image"] + index + 1}, project.id, links, copies + index
                    ),
                    "stage": "new",
                    "saliency_path": None,
                }
                for index, image in enumerate(opened)
            ],
        )
        writer.flush()
        connection.execute(
            update(WorkerRow.__table__).where(WorkerRow.id == bindparam("worker")).values(answers_given=bindparam("n")),
            [{"worker": worker_id, "n": n} for worker_id, n in given.items()],
        )
        if project.engine.dialect.name == "postgresql":
            for table in ("image", "region", "task", "answer", "worker"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
    if project.engine.dialect.name == "postgresql":
        with project.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    return BuiltStudy(project, n_images, n_open, task_count, answer_count, n_workers, time.perf_counter() - started)


_ID_TABLES = {"image": ImageRow.__table__, "region": RegionRow.__table__, "task": TaskRow.__table__}


def _max_id(connection: Any, table: Table) -> int:
    return connection.scalar(select(func.coalesce(func.max(table.c.id), 0)))


def _insert_workers(
    connection: Any, project_id: int, workers: list[dict[str, Any]], groups: int, copies: int, per_group: int
) -> dict[tuple[int, int], int]:
    """One study worker per template worker and group, with the template worker's attributes and (scaled)
    quality counters; (template worker id, group) -> study worker id."""
    rows = []
    for group in range(groups):
        share = min(per_group, copies - group * per_group)
        for worker in workers:
            rows.append(
                {
                    **{key: value for key, value in worker.items() if key != "id"},
                    "project_id": project_id,
                    "external_id": f"{worker['external_id']}-{group}",
                    "gold_seen": worker["gold_seen"] * share,
                    "gold_correct": worker["gold_correct"] * share,
                    "too_fast": worker["too_fast"] * share,
                    "answers_given": 0,  # counted as the copies' answers are written
                }
            )
    connection.execute(insert(WorkerRow.__table__), rows)
    ids = connection.execute(
        select(WorkerRow.id, WorkerRow.external_id).where(WorkerRow.project_id == project_id)
    ).all()
    by_name = dict((external_id, worker_id) for worker_id, external_id in ids)
    return {
        (worker["id"], group): by_name[f"{worker['external_id']}-{group}"]
        for group in range(groups)
        for worker in workers
    }


def _copy_image(image: dict, image_of: dict[int, int], project_id: int, links: Path, copy: int) -> dict[str, Any]:
    source = Path(image["path"])
    link = links / f"{copy:06d}-{source.name}"
    os.link(source, link)
    return {**image, "id": image_of[image["id"]], "project_id": project_id, "path": str(link)}


def _copy_task(task: dict, task_of: dict, region_of: dict, image_of: dict, project_id: int) -> dict[str, Any]:
    return {
        **task,
        "id": task_of[task["id"]],
        "project_id": project_id,
        "image_id": image_of[task["image_id"]],
        "region_id": region_of.get(task["region_id"]) if task["region_id"] is not None else None,
        "parent_id": task_of[task["parent_id"]] if task["parent_id"] is not None else None,
    }


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def serve_requests(project: Project, requests: int, polls: int, seed: int = 0) -> dict[str, Any]:
    """Next-task and answer latencies of simulated workers, then progress and dashboard latencies (ms)."""
    rng = random.Random(seed)
    name = project.config.name
    key = {"X-API-Key": API_KEY}
    next_ms: list[float] = []
    answer_ms: list[float] = []
    with TestClient(create_app(project)) as client:
        tokens = []
        for i in range(8):
            opened = client.post(
                f"/api/v1/projects/{name}/sessions",
                json={"platform": "simulated", "worker_id": f"timing-{i}"},
                headers=key,
            )
            opened.raise_for_status()
            tokens.append({"Authorization": f"Bearer {opened.json()['token']}"})
        for i in range(requests):
            auth = tokens[i % len(tokens)]
            started = time.perf_counter()
            response = client.get("/api/v1/tasks/next", headers=auth)
            next_ms.append(1000 * (time.perf_counter() - started))
            if response.status_code == 204:
                break
            response.raise_for_status()
            task = response.json()
            body = {
                "task_id": task["task_id"],
                "answer": rng.choice(["yes", "no"]),
                "client_id": f"timing-{i}",
                "client_ms": 1600,
            }
            started = time.perf_counter()
            client.post("/api/v1/answers", json=body, headers=auth).raise_for_status()
            answer_ms.append(1000 * (time.perf_counter() - started))
        polled: dict[str, list[float]] = {"progress": [], "dashboard": []}
        refresh_s: dict[str, float] = {}
        for endpoint, times in polled.items():
            for _ in range(polls):
                started = time.perf_counter()
                response = client.get(f"/api/v1/projects/{name}/{endpoint}", headers=key)
                times.append(1000 * (time.perf_counter() - started))
                response.raise_for_status()
                refresh_s[endpoint] = response.json()["compute_seconds"]
    return {
        "next_ms": next_ms,
        "answer_ms": answer_ms,
        "progress_ms": polled["progress"],
        "dashboard_ms": polled["dashboard"],
        "progress_refresh_s": refresh_s["progress"],
        "dashboard_refresh_s": refresh_s["dashboard"],
    }


def database_mb(project: Project) -> float:
    if project.engine.dialect.name == "sqlite":
        with project.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(project.engine.url.database)
        return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()) / 2**20
    with project.engine.connect() as connection:
        size = connection.scalar(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        )
    return float(size) / 2**20


def mask_sample(project: Project, size: int) -> list[int]:
    """Every k-th image with a mask to build, ``size`` of them at most, spread over the whole study."""
    with project.sessions() as session:
        ids = session.scalars(
            select(ImageRow.id)
            .where(ImageRow.project_id == project.id, ImageRow.stage.notin_(("new", "error")))
            .order_by(ImageRow.id)
        ).all()
    step = max(1, -(-len(ids) // size))
    return list(ids[::step])


def measure(study: BuiltStudy, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one study (see the module's docstring)."""
    project = study.project
    propose_s, proposed = timed(lambda: propose(project))
    sample = mask_sample(project, args.sample)
    aggregate_s, builder = timed(lambda: MaskBuilder(project))
    masks_s, stats = timed(lambda: build_masks(project, ("png",), builder=builder, image_ids=sample))
    images_s, stats = timed(lambda: build_masks(project, (), builder=builder, image_ids=sample))

    def report() -> None:
        summary = summarize(project, stats)
        write_outputs(project, project.directory, f"crowdpatch: {project.config.name}", summary, stats, [])

    report_s, _ = timed(report)
    with_masks = study.images - study.open_images + proposed.processed
    served = serve_requests(project, args.requests, args.polls)
    return {
        "database": project.engine.dialect.name,
        "images": study.images,
        "questions": study.questions,
        "answers": study.answers,
        "workers": study.workers,
        "build s": study.seconds,
        "propose ms/img": 1000 * propose_s / max(proposed.processed, 1),
        "aggregate s": aggregate_s,
        "masks ms/img": 1000 * (aggregate_s + masks_s / len(stats) * with_masks) / with_masks,
        "report ms/img": 1000 * (aggregate_s + images_s / len(stats) * with_masks + report_s) / with_masks,
        "next p50 ms": statistics.median(served["next_ms"]),
        "next p95 ms": percentile(served["next_ms"], 0.95),
        "answer p50 ms": statistics.median(served["answer_ms"]),
        "answer p95 ms": percentile(served["answer_ms"], 0.95),
        "progress p50 ms": statistics.median(served["progress_ms"]),
        "progress refresh s": served["progress_refresh_s"],
        "dashboard p50 ms": statistics.median(served["dashboard_ms"]),
        "dashboard max ms": max(served["dashboard_ms"]),
        "dashboard refresh s": served["dashboard_refresh_s"],
        "DB MB": database_mb(project),
        "_sample": len(stats),
        "_proposed": proposed.processed,
        "_requests": len(served["answer_ms"]),
    }


class PostgresSchema:
    """A fresh schema of the PostgreSQL at ``url`` for one study; dropped on exit unless ``keep``."""

    def __init__(self, url: str, name: str, keep: bool):
        self.url, self.name, self.keep = url, name, keep
        self.admin = make_engine(url)

    def __enter__(self) -> str:
        with self.admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {self.name} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {self.name}"))
        return with_settings(self.url, search_path=self.name)

    def __exit__(self, *_exc: object) -> None:
        if not self.keep:
            with self.admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {self.name} CASCADE"))
        self.admin.dispose()


@contextmanager
def served_study_on_postgres(postgres: str, name: str, images: int) -> Iterator[Project]:
    """bench/load.py's patch-phase project over ``images`` built-in images, in a fresh schema ``name`` of the
    PostgreSQL at ``postgres``; closed and dropped on exit."""
    out = Path(tempfile.mkdtemp(prefix=f"crowdpatch-{name}-"))
    with PostgresSchema(postgres, name, keep=False) as url:
        project = make_project(out / "project", builtin_files(out, images), url, "patch")
        try:
            yield project
        finally:
            project.close()


def run_one(template: Template, n_images: int, backend: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    directory = work / f"{backend}-{n_images}"
    shutil.rmtree(directory, ignore_errors=True)
    if backend == "sqlite":
        study = build_study(template, directory, n_images, None, args.open_share, args.images_per_worker)
        try:
            return measure(study, args)
        finally:
            study.project.close()
    with PostgresSchema(args.postgres, f"scale_{n_images}", args.keep) as url:
        study = build_study(template, directory, n_images, url, args.open_share, args.images_per_worker)
        try:
            return measure(study, args)
        finally:
            study.project.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--postgres", default=POSTGRES, help="PostgreSQL database; each study is a schema of it.")
    parser.add_argument("--pool", type=int, default=64, help="Images of the template study (each size copies it).")
    parser.add_argument("--open-share", type=float, default=0.01, help="Share of the images not proposed yet.")
    parser.add_argument("--images-per-worker", type=int, default=50, help="Images per study worker.")
    parser.add_argument(
        "--sample", type=int, default=500, help="Images whose masks are built to time the per-image part."
    )
    parser.add_argument("--requests", type=int, default=300, help="Next-task and answer requests timed per study.")
    parser.add_argument("--polls", type=int, default=20, help="Progress and dashboard requests timed per study.")
    parser.add_argument("--work", type=Path, help="Folder for the studies (default: a temporary folder, removed).")
    parser.add_argument("--keep", action="store_true", help="Keep the studies (and PostgreSQL schemas) afterwards.")
    parser.add_argument("--json", type=Path, help="Also write the rows here (a JSON list).")
    parser.add_argument("--write", action="store_true", help="Write the table into docs/benchmarks.md.")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="crowdpatch-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        template = Template.read(template_study(work, args.pool))
        rows = []
        for n_images in args.images:
            for backend in args.backends:
                rows.append(run_one(template, n_images, backend, args, work))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if not args.keep:
                    shutil.rmtree(work / f"{backend}-{n_images}", ignore_errors=True)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    command = " ".join(["python bench/scale.py", *sys.argv[1:]])
    text_ = "\n\n".join(
        [
            f"`{command}`; host: {cpu_model()}, {os.cpu_count()} cores; load average before: {load:.2f}; "
            f"template of {args.pool} images at {IMAGE_SIDE} px; {args.requests} next-task and answer requests, "
            f"{args.polls} progress and dashboard requests per study",
            markdown_table(rows, skip=tuple(key for key in rows[0] if key.startswith("_"))),
        ]
    )
    print(text_)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write:
        write_section(SECTION, text_)


if __name__ == "__main__":
    main()
