"""Mask quality against human cost on every real set, worst set first (simulated crowd, modeled times).

Runs the simulated pipeline of `crowdpatch bench-masks` for each configuration on Weizmann horse,
GrabCut, the COCO subset and a mixed set drawn from all three, and prints per set: mask IoU, human
seconds per image, the speed-up against a 79 s polygon, the saliency map's own IoU, and where the
seconds go (per question kind). Sets are ordered by the first configuration's IoU, lowest first:
a method tuned to one set shows on the others. With --write the tables and the cost-against-IoU
figure go to docs/benchmarks.md and docs/results/.

    python bench/mask_quality.py --limit 40                       # a quick look, 40 images per set
    python bench/mask_quality.py --configs default adaptive-csnet --write
    python bench/mask_quality.py --configs precise-csnet --limit 40 --write --merge   # re-run some rows
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchkit import DATA, MASK_DATASETS, markdown_table, write_section
from crowdpatch.config import ProjectConfig, TimeModel
from crowdpatch.report.curves import CurvePoint, plot_curves
from crowdpatch.workflow import SilentProgress, run_bench_masks

ROOT = Path(__file__).resolve().parents[1]
CSNET = DATA / "weights" / "csnet" / "csnet-L-x2.pth.tar"
MIXED_PER_SET = 40
"""Images drawn from each real set into the mixed set (with ``--limit N``: N / 3 from each, N in all)."""


def _csnet(config: ProjectConfig) -> None:
    config.saliency.backend = "csnet"
    config.saliency.weights = str(CSNET)


def _adaptive(config: ProjectConfig) -> None:
    config.crowd.planner = "adaptive"


def _precise(config: ProjectConfig) -> None:
    config.crowd.planner = "precise"


def _one_correction_round(config: ProjectConfig) -> None:
    config.precise.correction_rounds = 1


def _two_correction_rounds(config: ProjectConfig) -> None:
    config.precise.correction_rounds = 2


def _no_correction(config: ProjectConfig) -> None:
    config.precise.correction_rounds = 0


CONFIGURATIONS: dict[str, list[Callable[[ProjectConfig], None]]] = {
    "default": [],
    "precise": [_precise, _two_correction_rounds],
    "precise-csnet": [_precise, _csnet, _two_correction_rounds],
    "precise-1-round": [_precise, _one_correction_round],
    "precise-csnet-1-round": [_precise, _csnet, _one_correction_round],
    "precise-no-corrections": [_precise, _no_correction],
    "adaptive": [_adaptive],
    "fixed-csnet": [_csnet],
    "adaptive-csnet": [_adaptive, _csnet],
}
"""Named configurations: each a list of changes to a fresh project's configuration."""


def mixed_set(out: Path, per_set: int, seed: int) -> tuple[Path, Path]:
    """A folder of ``per_set`` images (and masks) drawn from each real set, linked, names prefixed by the set."""
    images, masks = out / "images", out / "masks"
    shutil.rmtree(out, ignore_errors=True)
    images.mkdir(parents=True)
    masks.mkdir()
    rng = random.Random(seed)
    for name, (image_dir, mask_dir) in MASK_DATASETS.items():
        if name == "mixed":
            continue
        mask_by_stem = {path.stem: path for path in mask_dir.iterdir()}
        pairs = [(path, mask_by_stem[path.stem]) for path in sorted(image_dir.iterdir()) if path.stem in mask_by_stem]
        for image, mask in rng.sample(pairs, min(per_set, len(pairs))):
            (images / f"{name}-{image.name}").symlink_to(image)
            (masks / f"{name}-{mask.stem}{mask.suffix}").symlink_to(mask)
    return images, masks


def run(
    dataset: str, folders: tuple[Path, Path], name: str, limit: int | None, seed: int, out: Path, keep: bool = False
) -> dict:
    config = ProjectConfig(name="bench", target="object")
    config.simulation.seed = seed
    for change in CONFIGURATIONS[name]:
        change(config)
    target = out / f"{dataset}-{name}"
    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    result = run_bench_masks(folders[0], folders[1], target, config, SilentProgress(), limit, dataset)
    if not keep:
        shutil.rmtree(target / "project", ignore_errors=True)  # keep the summary and the report, not the database
    summary = result.summary
    seconds = summary["modeled_seconds_per_image"]["patch"]
    by_kind = summary["seconds_per_image_by_kind"]
    return {
        "dataset": dataset,
        "configuration": name,
        "images": summary["images_scored"],
        "mask IoU": summary["mask_iou"]["patch"],
        "s/img": seconds,
        "x polygon": summary["speedup_vs_polygon"],
        "saliency IoU": summary["mask_iou"]["saliency"],
        "where the seconds go": ", ".join(
            f"{kind} {value:.1f}" for kind, value in sorted(by_kind.items(), key=lambda kv: -kv[1])
        ),
        "run s": time.perf_counter() - start,
    }


def planner_of(configuration: str) -> str:
    """The planner a configuration runs (the figure draws one line per planner and set)."""
    config = ProjectConfig(name="bench", target="object")
    for change in CONFIGURATIONS.get(configuration, []):
        change(config)
    return config.crowd.planner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGURATIONS), choices=sorted(CONFIGURATIONS))
    parser.add_argument("--datasets", nargs="+", default=[*MASK_DATASETS, "mixed"])
    parser.add_argument("--limit", type=int, default=None, help="images per set (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep each run's project (its database and candidates)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "crowdpatch_mask_quality")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the tables into docs/benchmarks.md and the figure into docs/results/",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --write: keep the rows of docs/results/mask_quality.json this run does not redo",
    )
    args = parser.parse_args()
    folders = {name: MASK_DATASETS[name] for name in args.datasets if name != "mixed"}
    if "mixed" in args.datasets:
        # With a limit, the mixed set holds that many images drawn evenly from every set (a limit applied to
        # its sorted files would take them all from the set whose name sorts first).
        per_set = max(1, args.limit // len(MASK_DATASETS)) if args.limit else MIXED_PER_SET
        folders["mixed"] = mixed_set(args.out / "mixed-set", per_set, args.seed)
    limit = f" --limit {args.limit}" if args.limit else ""
    sets = "" if args.datasets == parser.get_default("datasets") else f" --datasets {' '.join(args.datasets)}"
    command = f"python bench/mask_quality.py{sets} --configs {' '.join(args.configs)}{limit} --seed {args.seed}"
    rows = []
    for dataset, pair in folders.items():
        for name in args.configs:
            row = {**run(dataset, pair, name, args.limit, args.seed, args.out, args.keep), "command": command}
            rows.append(row)
            print(markdown_table([row], skip=("summary", "command")).splitlines()[-1], flush=True)
    results = ROOT / "docs" / "results" if args.write else args.out
    if args.merge and (results / "mask_quality.json").exists():
        redone = {(row["dataset"], row["configuration"]) for row in rows}
        kept = json.loads((results / "mask_quality.json").read_text(encoding="utf-8"))
        rows = [row for row in kept if (row["dataset"], row["configuration"]) not in redone] + rows
        order = {name: index for index, name in enumerate(CONFIGURATIONS)}
        rows.sort(key=lambda row: order.get(row["configuration"], len(order)))
        folders = {**{row["dataset"]: None for row in kept}, **folders}
    first = {row["dataset"]: row["mask IoU"] or 0.0 for row in rows if row["configuration"] == rows[0]["configuration"]}
    order = sorted(folders, key=lambda dataset: first.get(dataset, 0.0))
    tables = []
    for dataset in order:
        table = markdown_table(
            [row for row in rows if row["dataset"] == dataset], skip=("summary", "dataset", "command")
        )
        tables.append(f"**{dataset}**\n\n{table}")
    text = "\n\n".join(tables)
    print(text)
    results.mkdir(parents=True, exist_ok=True)
    figure = results / "mask_quality.png"
    # Drawn from the rows themselves, so rows kept by --merge need no run folder of an earlier machine.
    points = [
        CurvePoint(planner_of(name), row["dataset"], row["s/img"], row["mask IoU"], name)
        for row in rows
        if row["mask IoU"] is not None
        for name in [row["configuration"]]
    ]
    plot_curves(points, TimeModel().polygon, figure)
    (results / "mask_quality.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(f"figure: {figure}")
    if args.write:
        commands = ", then ".join(f"`{c}`" for c in dict.fromkeys(row.get("command", command) for row in rows))
        note = f"{commands} (`--write`); 10% worker error, 10% spammers; sets ordered worst first."
        write_section("mask_quality", note + "\n\n" + text)


if __name__ == "__main__":
    main()
