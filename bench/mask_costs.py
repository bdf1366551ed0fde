"""Cost against mask quality of the patch scheme on real images with GT masks (simulated crowd).

Runs the same pipeline as `crowdpatch bench-masks` for several presentations and depths and prints
one table (modeled human-seconds per image, answers per image, IoU) per dataset. With --write the
table replaces the section between the markers in docs/benchmarks.md.

    python bench/mask_costs.py --limit 60 --write
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchkit import MASK_DATASETS, cost_figures, markdown_table, write_section
from crowdpatch.config import ProjectConfig
from crowdpatch.workflow import SilentProgress, run_bench_masks

CONFIGS = [
    ("single", 1, 8),
    ("single", 2, 8),
    ("single", 3, 8),
    ("grid", 2, 4),
    ("grid", 2, 8),
    ("grid", 2, 16),
]


def run(
    dataset: str, presentation: str, depth: int, grid: int, saliency: str, limit: int | None, seed: int, refine: str
) -> dict:
    images, masks = MASK_DATASETS[dataset]
    config = ProjectConfig(name="bench", target="object")
    config.patches.presentation = presentation
    config.patches.max_depth = depth
    config.patches.grid_size = grid
    config.saliency.backend = saliency
    config.simulation.seed = seed
    config.patches.refine = refine
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_bench_masks(images, masks, Path(tmp), config, SilentProgress(), limit)
        wall = time.perf_counter() - start
    s = result.summary
    return {
        "dataset": dataset,
        "saliency": saliency,
        "scheme": f"single, depth {depth}" if presentation == "single" else f"grid {grid}x{grid}",
        **cost_figures(s),
        "run s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="images per dataset (default: all)")
    parser.add_argument("--datasets", nargs="+", default=list(MASK_DATASETS))
    parser.add_argument(
        "--saliency", nargs="+", default=["spectral"], help="saliency backends to compare (e.g. spectral gt)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--refine", choices=["none", "grabcut"], default="none", help="mask refinement (the published table: none)"
    )
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets:
        for saliency in args.saliency:
            for presentation, depth, grid in CONFIGS:
                row = run(dataset, presentation, depth, grid, saliency, args.limit, args.seed, args.refine)
                rows.append(row)
                print(markdown_table([row]).splitlines()[-1], flush=True)
    text = markdown_table(rows)
    print(text)
    if args.write:
        write_section("mask_costs", text)


if __name__ == "__main__":
    main()
