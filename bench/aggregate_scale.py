"""Aggregation at scale: millions of yes/no votes -> posteriors, time and peak memory (not a test).

The votes are made synthetically at a study's ratios: images of ``--questions`` questions (grid cells or
windows) each, every image answered by ``--votes`` distinct workers who answer all of its questions
(as one grid screen does), drawn from ``--workers`` workers of whom ``--spammers`` are spammers (half
always say yes, half answer at random); honest workers' sensitivity and specificity are drawn
around 0.9; a fifth of the questions are "yes". 10 million votes are then 100,000 images.

Each aggregation runs in a fresh process: the frame of votes is built (as ``collect_votes`` returns
it: string task and worker keys, integer labels), the process's peak-memory mark is reset, and
``posteriors`` runs; "peak RSS" is the process's high-water mark during aggregation, the frame
included.

``collect_votes`` (store -> frame) is measured apart, on a SQLite project holding ``--store-votes``
votes (one patch answer each, the most rows per vote; a grid answer is one row for all of its
cells), built with bulk inserts; its time per vote is extrapolated linearly to the table's sizes
(inserting 10 million rows would take longer than the aggregation being measured).

    python bench/aggregate_scale.py [--votes 1e6 3e6 1e7] [--crowdkit-up-to 1e6] [--write]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue as queue_module
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, insert
from sqlalchemy.orm import Session

from benchkit import cpu_model, markdown_table, write_section
from crowdpatch.aggregate import collect_votes, posteriors
from crowdpatch.aggregate.votes import crowdkit_dawid_skene
from crowdpatch.store.models import AnswerRow, Base, ImageRow, ProjectRow, TaskRow, WorkerRow

SECTION = "aggregate-scale"


def synthetic_votes(
    n_votes: int, questions: int, votes: int, workers: int, spammers: float, seed: int = 0
) -> tuple[pd.DataFrame, pd.Series]:
    """(votes as ``collect_votes`` returns them, each question's true label by its key)."""
    rng = np.random.default_rng(seed)
    images = max(1, n_votes // (questions * votes))
    crowd = rng.integers(workers, size=(images, votes))
    while True:  # each image's workers are distinct
        repeated = (np.diff(np.sort(crowd, axis=1), axis=1) == 0).any(axis=1)
        if not repeated.any():
            break
        crowd[repeated] = rng.integers(workers, size=(int(repeated.sum()), votes))
    kind = np.zeros(workers, dtype=np.int8)  # 0 honest, 1 always yes, 2 random
    spam = rng.random(workers) < spammers
    kind[spam] = np.where(rng.random(int(spam.sum())) < 0.5, 1, 2)
    sensitivity = np.clip(rng.normal(0.9, 0.05, workers), 0.6, 0.99)
    specificity = np.clip(rng.normal(0.9, 0.05, workers), 0.6, 0.99)
    truth = (rng.random(images * questions) < 0.2).astype(np.int8)

    question = np.repeat(np.arange(images * questions), votes)  # votes of one question are adjacent
    worker = crowd[question // questions, np.tile(np.arange(votes), images * questions)]
    honest_right = np.where(truth[question] == 1, sensitivity[worker], specificity[worker])
    answer = np.where(rng.random(len(question)) < honest_right, truth[question], 1 - truth[question])
    answer = np.where(kind[worker] == 1, 1, np.where(kind[worker] == 2, rng.integers(2, size=len(question)), answer))
    image_key = pd.Series(np.arange(images).repeat(questions)).astype(str)
    cell_key = pd.Series(np.tile(np.arange(questions), images)).astype(str)
    keys = (image_key + ":" + cell_key).to_numpy()
    frame = pd.DataFrame(
        {
            "task": pd.array(keys[question], dtype="str"),
            "worker": pd.array(pd.Series(worker).astype(str).to_numpy(), dtype="str"),
            "label": answer.astype(np.int64),
        }
    )
    return frame, pd.Series(truth, index=keys)


def reset_peak_memory() -> None:
    """Reset this process's high-water mark of resident memory (Linux: /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_mb() -> float:
    """This process's high-water mark of resident memory since the last reset."""
    return _status_mb("VmHWM")


def resident_memory_mb() -> float:
    return _status_mb("VmRSS")


def _aggregate(n_votes: int, method: str, args: argparse.Namespace, queue: multiprocessing.Queue) -> None:
    votes, truth = synthetic_votes(n_votes, args.questions, args.per_question, args.workers, args.spammers)
    frame_mb = votes.memory_usage(deep=True).sum() / 2**20
    reset_peak_memory()
    started = time.perf_counter()
    if method == "crowd-kit ds":
        model = crowdkit_dawid_skene()
        model.fit(votes)
        result, iterations = model.probas_[1], len(model.loss_history_)
    else:
        result = posteriors(votes, method)
        iterations = None
    seconds = time.perf_counter() - started
    decided = (result.reindex(truth.index) >= 0.5).astype(np.int8)
    queue.put(
        {
            "votes": len(votes),
            "questions": len(result),
            "method": method,
            "seconds": seconds,
            "peak RSS MB": peak_memory_mb(),
            "frame MB": frame_mb,
            "iterations": iterations if iterations is not None else "",
            "accuracy": float((decided == truth).mean()),
        }
    )


def aggregate(n_votes: int, method: str, args: argparse.Namespace) -> dict:
    """One aggregation in a fresh process (its memory its own)."""
    fork = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = fork.Queue()
    child = fork.Process(target=_aggregate, args=(n_votes, method, args, queue))
    return _result_of(child, queue)


def _result_of(child: multiprocessing.Process, queue: multiprocessing.Queue) -> dict:
    """Start ``child`` and return what it puts on ``queue``; an error if it ends without."""
    child.start()
    while True:
        try:
            row = queue.get(timeout=1)
        except queue_module.Empty:
            if not child.is_alive():
                raise RuntimeError(f"the measuring process ended with exit code {child.exitcode}") from None
            continue
        child.join()
        return row


def store_project(path: Path, n_votes: int, args: argparse.Namespace) -> int:
    """A SQLite store holding ``n_votes`` patch answers (bulk inserts); the project's id."""
    votes, _ = synthetic_votes(n_votes, args.questions, args.per_question, args.workers, args.spammers)
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    images = int(votes["task"].str.split(":").str[0].astype(int).max()) + 1
    with Session(engine) as session, session.begin():
        project = ProjectRow(name="scale", target="object")
        session.add(project)
        session.flush()
        session.execute(
            insert(ImageRow),
            [
                {"id": i + 1, "project_id": project.id, "path": f"{i}.png", "width": 64, "height": 64}
                for i in range(images)
            ],
        )
        workers = sorted(votes["worker"].unique(), key=int)
        session.execute(
            insert(WorkerRow),
            [{"id": int(w) + 1, "project_id": project.id, "platform": "simulated", "external_id": w} for w in workers],
        )
        keys = votes["task"].unique()
        task_ids = {key: i + 1 for i, key in enumerate(keys)}
        session.execute(
            insert(TaskRow),
            [
                {
                    "id": task_ids[key],
                    "project_id": project.id,
                    "image_id": int(key.split(":")[0]) + 1,
                    "kind": "patch",
                    "key": f"1:{key.split(':')[1]}:0",
                    "box": [0, 0, 8, 8],
                    "votes_wanted": args.per_question,
                }
                for key in keys
            ],
        )
        session.execute(
            insert(AnswerRow),
            [
                {
                    "task_id": task_ids[task],
                    "worker_id": int(worker) + 1,
                    "value": "yes" if label else "no",
                    "client_id": str(i),
                    "shown_at": 0.0,
                    "answered_at": 1.6,
                    "seconds": 1.6,
                    "time_source": "modeled",
                }
                for i, (task, worker, label) in enumerate(votes.itertuples(index=False))
            ],
        )
        project_id = project.id
    engine.dispose()
    return project_id


def _collect(path: Path, project_id: int, queue: multiprocessing.Queue) -> None:
    engine = create_engine(f"sqlite:///{path}")
    baseline = resident_memory_mb()
    reset_peak_memory()
    started = time.perf_counter()
    with Session(engine) as session:
        votes = collect_votes(session, project_id)
    seconds = time.perf_counter() - started
    queue.put({"votes": len(votes), "seconds": seconds, "peak RSS MB": peak_memory_mb(), "baseline MB": baseline})


def collect(n_votes: int, args: argparse.Namespace, directory: Path) -> dict:
    """collect_votes on a stored project of ``n_votes`` votes, in a fresh process."""
    path = directory / f"votes-{n_votes}.sqlite"
    project_id = store_project(path, n_votes, args)
    fork = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue = fork.Queue()
    child = fork.Process(target=_collect, args=(path, project_id, queue))
    row = _result_of(child, queue)
    path.unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=float, nargs="+", default=[1e6, 3e6, 1e7])
    parser.add_argument("--methods", nargs="+", default=["ds"], choices=["ds", "mv", "glad"])
    parser.add_argument(
        "--crowdkit-up-to", type=float, default=1e6, help="Also run crowd-kit's own Dawid-Skene up to this many votes."
    )
    parser.add_argument("--questions", type=int, default=33, help="Questions per image.")
    parser.add_argument("--votes-per-question", dest="per_question", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2000)
    parser.add_argument("--spammers", type=float, default=0.1, help="Share of the workers who are spammers.")
    parser.add_argument("--store-votes", type=float, nargs="+", default=[1e5, 3e5])
    parser.add_argument("--json", type=Path, help="Also write the rows here (a JSON list).")
    parser.add_argument("--write", action="store_true", help="Write the table into docs/benchmarks.md.")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    rows = []
    for n in [int(v) for v in args.votes]:
        if n <= args.crowdkit_up_to:
            rows.append(aggregate(n, "crowd-kit ds", args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        for method in args.methods:
            rows.append(aggregate(n, method, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="crowdpatch-aggregate-") as directory:
        stored = [collect(int(n), args, Path(directory)) for n in args.store_votes]
    for row in stored:
        print(json.dumps({"collect_votes": row}), file=sys.stderr, flush=True)
    largest = max(stored, key=lambda row: row["votes"])
    per_vote_s = largest["seconds"] / largest["votes"]
    baseline = largest["baseline MB"]
    per_vote_mb = (largest["peak RSS MB"] - baseline) / largest["votes"]
    collected = [
        {
            "votes": row["votes"],
            "collect_votes s": f"{per_vote_s * row['votes']:.1f} (extrapolated)",
            "collect_votes peak RSS MB": f"{baseline + per_vote_mb * row['votes']:.0f} (extrapolated)",
        }
        for row in rows
        if row["method"] == args.methods[0]
    ]
    text = "\n\n".join(
        [
            f"host: {cpu_model()}; {args.questions} questions per image, {args.per_question} votes each; "
            f"{args.workers} workers, {args.spammers:.0%} spammers; one fresh process per row; "
            f"load average before: {load:.2f}",
            markdown_table(rows),
            "collect_votes (SQLite store -> frame), measured on "
            + ", ".join(
                f"{row['votes']:,} votes: {row['seconds']:.2f} s, {row['peak RSS MB']:.0f} MB" for row in stored
            )
            + f"; the largest's time per vote and memory per vote above the process's {baseline:.0f} MB before"
            " collecting, extrapolated linearly:",
            markdown_table(collected),
        ]
    )
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"aggregate": rows, "collect_votes": stored}, indent=1))
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
