"""How well live quality control stops spammers, and how many honest workers it stops by mistake.

For each spammer kind (random, always_yes, always_no, too_fast), worker error and seed, the
in-process simulation answers a fresh project of the built-in synthetic benchmark with a crowd in
which a share of the workers (default 25%) are spammers of that one kind and the rest honest.
Then the store says who was stopped, by which rule (gold, too_fast, constant), after how many
answers. Times are modeled (the simulator's human time model), as every simulated figure is.

    python bench/spam.py --write            # the table in docs/benchmarks.md
    python bench/spam.py --seeds 1 --images 20 --presentations grid   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from benchkit import markdown_table, write_section
from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import BenchmarkSpec, generate_benchmark, load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.simulate.run import run_simulation
from crowdpatch.store.models import AnswerRow, WorkerRow

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("random", "always_yes", "always_no", "too_fast")
RULES = ("constant", "gold", "too_fast")


@dataclass(frozen=True)
class WorkerOutcome:
    kind: str
    stopped_reason: str | None
    answers: int


def simulate_crowd(
    data: Path, labels: Path, presentation: str, kind: str, worker_error: float, seed: int, workers: int, share: float
) -> list[WorkerOutcome]:
    """A fresh project answered to the end by ``workers`` simulated workers, ``share`` of them spammers of ``kind``."""
    config = ProjectConfig(name="spam", target="object", images_dir=str(data / "images"), masks_dir=str(data / "masks"))
    config.patches.presentation = presentation
    config.simulation.workers = workers
    config.simulation.spammers = share
    config.simulation.spammer_kinds = [kind]
    config.simulation.worker_error = worker_error
    config.simulation.seed = seed
    with tempfile.TemporaryDirectory() as tmp:
        project = Project.create(Path(tmp) / "proj", config)
        try:
            add_images(project, load_folder_dataset(data / "images", labels, data / "masks").records)
            propose(project)
            run_simulation(project)
            with project.sessions() as session:
                rows = session.execute(
                    select(WorkerRow.attributes, WorkerRow.stopped_reason, func.count(AnswerRow.id))
                    .join(AnswerRow, AnswerRow.worker_id == WorkerRow.id, isouter=True)
                    .where(WorkerRow.project_id == project.id)
                    .group_by(WorkerRow.id)
                ).all()
        finally:
            project.close()
    return [WorkerOutcome(attributes["kind"], reason, answers) for attributes, reason, answers in rows]


def spammer_row(presentation: str, error: float, kind: str, outcomes: list[WorkerOutcome]) -> dict:
    spammers = [o for o in outcomes if o.kind == kind]
    stopped = [o for o in spammers if o.stopped_reason]
    rules = Counter(o.stopped_reason for o in stopped)
    free = [o.answers for o in spammers if not o.stopped_reason]
    return {
        "presentation": presentation,
        "worker error": error,
        "spammer kind": kind,
        "spammers": len(spammers),
        "stopped": f"{len(stopped) / len(spammers):.0%}" if spammers else "-",
        "by rule": ", ".join(f"{rule} {rules[rule]}" for rule in RULES if rules[rule]) or "-",
        "answers before stop (median)": f"{statistics.median(o.answers for o in stopped):.0f}" if stopped else "-",
        "answers of those not stopped (mean)": f"{statistics.mean(free):.0f}" if free else "-",
    }


def honest_row(presentation: str, error: float, outcomes: list[WorkerOutcome]) -> dict:
    honest = [o for o in outcomes if o.kind == "honest"]
    stopped = [o for o in honest if o.stopped_reason]
    rules = Counter(o.stopped_reason for o in stopped)
    return {
        "presentation": presentation,
        "worker error": error,
        "honest workers": len(honest),
        "stopped (false positives)": f"{len(stopped)} ({len(stopped) / len(honest):.1%})",
        "by rule": ", ".join(f"{rule} {rules[rule]}" for rule in RULES if rules[rule]) or "-",
        "answers per honest worker (mean)": f"{statistics.mean(o.answers for o in honest):.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="images of the built-in benchmark (64 px)")
    parser.add_argument("--workers", type=int, default=40)
    parser.add_argument("--share", type=float, default=0.25, help="share of spammers in each crowd")
    parser.add_argument("--errors", type=float, nargs="+", default=[0.1, 0.2], help="mean honest worker error rates")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--presentations", nargs="+", default=["grid", "single"])
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args()

    start = time.perf_counter()
    spam_rows, honest_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        labels = generate_benchmark(data, BenchmarkSpec(n_images=args.images, size=64, seed=0))
        for presentation in args.presentations:
            for error in args.errors:
                everyone: list[WorkerOutcome] = []
                for kind in KINDS:
                    outcomes: list[WorkerOutcome] = []
                    for seed in range(args.seeds):
                        outcomes += simulate_crowd(
                            data, labels, presentation, kind, error, seed, args.workers, args.share
                        )
                    everyone += outcomes
                    spam_rows.append(spammer_row(presentation, error, kind, outcomes))
                    print(markdown_table([spam_rows[-1]]).splitlines()[-1], flush=True)
                honest_rows.append(honest_row(presentation, error, everyone))
                print(markdown_table([honest_rows[-1]]).splitlines()[-1], flush=True)
    elapsed = time.perf_counter() - start
    setup = (
        f"{args.images} built-in images (64 px), {args.workers} simulated workers per crowd of which "
        f"{args.share:.0%} spammers of one kind, {args.seeds} seeds per cell, default quality-control settings; "
        f"times modeled. Honest false positives pool every crowd of that presentation and error "
        f"({len(KINDS)} kinds x {args.seeds} seeds). `python bench/spam.py --write`, {elapsed:.0f} s."
    )
    text = f"{setup}\n\nSpammers:\n\n{markdown_table(spam_rows)}\n\nHonest workers:\n\n{markdown_table(honest_rows)}"
    print(text)
    if args.write:
        write_section("spam", text)


if __name__ == "__main__":
    main()
