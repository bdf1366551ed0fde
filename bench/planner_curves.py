"""Cost curves of the question planners on real images with GT masks (simulated crowd, modeled times).

Runs `crowdpatch bench-masks` once per point (planner x grid size or budget x saliency backend x
dataset), prints one table (human-seconds per image, answers per image, mask IoU, with and without
the GrabCut refinement), writes every run's summary under OUT, the curves figure
(`crowdpatch report --curves`) and, with --write, the table into docs/benchmarks.md.

    python bench/planner_curves.py --limit 100 --write
    python bench/planner_curves.py --saliency csnet --weights ../shared/data/weights/csnet/csnet-L-x2.pth.tar --write
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchkit import MASK_DATASETS, cost_figures, markdown_table, write_section
from crowdpatch.config import ProjectConfig, TimeModel
from crowdpatch.report.curves import load_points, plot_curves
from crowdpatch.workflow import SilentProgress, run_bench_masks

ROOT = Path(__file__).resolve().parents[1]

# (planner, grid size, budget seconds per image, refine)
POINTS = {
    "spectral": [
        ("fixed", 4, None, "none"),
        ("fixed", 8, None, "none"),
        ("fixed", 16, None, "none"),
        ("adaptive", 8, 40.0, "none"),
        ("adaptive", 8, 60.0, "none"),
        ("adaptive", 8, None, "none"),
        ("fixed", 8, None, "grabcut"),
        ("adaptive", 8, None, "grabcut"),
    ],
    "csnet": [
        ("fixed", 8, None, "grabcut"),
        ("adaptive", 8, None, "grabcut"),
        ("adaptive", 8, 12.0, "grabcut"),
    ],
}


def run(
    dataset: str,
    saliency: str,
    weights: str | None,
    planner: str,
    grid: int,
    budget: float | None,
    refine: str,
    limit: int | None,
    seed: int,
    out: Path,
) -> dict:
    images, masks = MASK_DATASETS[dataset]
    config = ProjectConfig(name="bench", target="object")
    config.crowd.planner = planner
    config.adaptive.budget_seconds = budget
    config.patches.grid_size = grid
    config.patches.refine = refine
    config.saliency.backend = saliency
    config.saliency.weights = weights
    config.simulation.seed = seed
    name = f"{dataset}-{saliency}-{planner}-g{grid}-b{budget or 0:g}-{refine}"
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    result = run_bench_masks(images, masks, target, config, SilentProgress(), limit, dataset)
    shutil.rmtree(target / "project", ignore_errors=True)  # keep the summary and report, not the database
    s = result.summary
    return {
        "dataset": dataset,
        "saliency": saliency,
        "planner": planner,
        "point": f"grid {grid}" + (f", budget {budget:g} s" if budget else ""),
        "refine": refine,
        **cost_figures(s),
        "run s": time.perf_counter() - start,
        "summary": str(target / "summary.json"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="images per dataset (default: all)")
    parser.add_argument("--datasets", nargs="+", default=list(MASK_DATASETS))
    parser.add_argument("--saliency", default="spectral", choices=sorted(POINTS))
    parser.add_argument("--weights", default=None, help="model file of the saliency backend (csnet)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "crowdpatch_planner_runs",
        help="where every run's summary and report go",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the table, figures and rows into docs/ (else figures and rows go to --out)",
    )
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets:
        for planner, grid, budget, refine in POINTS[args.saliency]:
            row = run(
                dataset, args.saliency, args.weights, planner, grid, budget, refine, args.limit, args.seed, args.out
            )
            rows.append(row)
            print(markdown_table([row], skip=("summary",)).splitlines()[-1], flush=True)
    text = markdown_table(rows, skip=("summary",))
    print(text)
    polygon = TimeModel().polygon
    # Figures and rows go to docs/ only with --write (a trial run must not replace the published ones).
    results = ROOT / "docs" / "results" if args.write else args.out
    for refine in ("none", "grabcut"):
        summaries = [Path(r["summary"]) for r in rows if r["refine"] == refine]
        if summaries:
            figure = results / f"planner_curves_{args.saliency}_{refine}.png"
            plot_curves(load_points(summaries), polygon, figure)
            print(f"figure: {figure}")
    (results / f"planner_curves_{args.saliency}.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    if args.write:
        limit = f", first {args.limit} images per dataset" if args.limit else ""
        option = f" --limit {args.limit}" if args.limit else ""
        note = (
            f"`python bench/planner_curves.py --saliency {args.saliency}{option}`{limit}; "
            f"10% worker error, 10% spammers, seed {args.seed}."
        )
        write_section(f"planner_curves:{args.saliency}", note + "\n\n" + text)


if __name__ == "__main__":
    main()
