"""Server load: N concurrent simulated workers on loopback, next-task + answer loop (not a test).

For each backend (SQLite with 1 process; PostgreSQL with 2 and 4 processes) and each crowd size,
a fresh built-in project is served by `crowdpatch serve`, and `simulate_via_http_async` runs the
workers for a bounded time. Prints one Markdown row per run: answers/s and request latency
percentiles (every request: next-task and answer alike).

    python bench/load.py [--workers 8 64 256] [--seconds 8] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import text

from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import BenchmarkSpec, generate_benchmark, load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.simulate.http import simulate_via_http_async
from crowdpatch.store.db import make_engine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path, data: tuple[Path, Path, Path], db_url: str | None) -> Project:
    images, labels, masks = data
    config = ProjectConfig(name="load", target="object", db_url=db_url, images_dir=str(images), masks_dir=str(masks))
    config.crowd.gold_rate = 0.0
    project = Project.create(root, config)
    add_images(project, load_folder_dataset(images, labels, masks).records)
    propose(project)
    return project


def serve(project: Project, processes: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "crowdpatch", "serve", str(project.directory), "--port", str(port), "--workers", str(processes)]
    child = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                return child, url
        except httpx.TransportError:
            time.sleep(0.2)
    child.kill()
    raise RuntimeError(f"server did not start, see {log}")


def run(project: Project, processes: int, workers: int, seconds: float, log: Path) -> dict:
    child, url = serve(project, processes, log)
    try:
        report = asyncio.run(simulate_via_http_async(
            url, project.config.name, project.config.server.effective_api_key(), workers,
            max_seconds=seconds, random_answers=True, seed=workers,
        ))
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="crowdpatch-load-"))
    data = generate_benchmark(out / "data", BenchmarkSpec(n_images=args.images, size=64, seed=0))
    files = (out / "data" / "images", data, out / "data" / "masks")
    backends: list[tuple[str, int]] = [("sqlite", 1), ("postgresql", 2), ("postgresql", 4)]
    print(f"cores: {os.cpu_count()}; {args.seconds:.0f} s per run; {args.images} images of 64 px")
    print("| database | processes | workers | answers | answers/s | p50 ms | p95 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backend, processes in backends:
        for workers in args.workers:
            tag = f"{backend}-{processes}-{workers}"
            db_url, schema = None, None
            if backend == "postgresql":
                schema = f"load_{uuid.uuid4().hex[:8]}"
                with make_engine(args.postgres).begin() as connection:
                    connection.execute(text(f"CREATE SCHEMA {schema}"))
                db_url = f"{args.postgres}?options=-csearch_path%3D{schema}"
            project = make_project(out / tag, files, db_url)
            project.close()
            result = run(project, processes, workers, args.seconds, out / f"{tag}.log")
            print(f"| {backend} | {processes} | {workers} | {result['answers']} | {result['answers_per_s']:.0f} | "
                  f"{result['p50']:.1f} | {result['p95']:.1f} | {result['p99']:.1f} |", flush=True)
            if schema:
                with make_engine(args.postgres).begin() as connection:
                    connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
