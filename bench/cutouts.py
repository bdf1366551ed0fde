"""Every attention guide on the real cut-out benchmark: does a crowd mask fix the shortcut on real objects?

Builds (or reuses, in ``--work``) two crowd studies of one benchmark (horses against COCO objects
cut out of ../shared/data and pasted on "land" and "water", which agree with the class in 99 % of
training images): ``cut`` with the precise planner (the default) and ``cut-fixed`` with the fixed
planner's 8 x 8 grid and no edge snapping (the paper's patch masks). Both are answered by the
simulated crowd (10 % error, 10 % spammers). Then one ``crowdpatch experiment`` trains a small CNN
on a CPU with every guide: none, saliency, the fixed planner's masks, the precise planner's masks
and the ground truth, each over ``--seeds`` seeds, and prints per guide the test worst-group
accuracy of every seed, its mean and standard deviation, accuracy, where the model looks (energy
in mask, pointing game), and the crowd's cost and mask IoU. With --write the table goes to
docs/benchmarks.md.

    python bench/cutouts.py --work /tmp/cutouts --write
    python bench/cutouts.py --work /tmp/cutouts --loss erodeswap+camfar --out /tmp/cutouts/erode-camfar
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from benchkit import DATA, cpu_model, markdown_table, write_section
from crowdpatch.project import Project
from crowdpatch.store.models import AnswerRow, ImageRow, MaskRow, TaskRow

SOURCES = (
    f"horse={DATA / 'weizmann_horse' / 'rgb'}:{DATA / 'weizmann_horse' / 'figure_ground'}",
    f"coco={DATA / 'coco_mval_subset' / 'img'}:{DATA / 'coco_mval_subset' / 'gt'}",
)
GUIDE_NAMES = {
    "none": "none (plain training)",
    "saliency": "saliency map alone",
    "patch-fixed": "crowd, fixed planner (8 x 8 grid)",
    "patch": "crowd, precise planner (default)",
    "gt": "ground truth (polygons)",
}
"""Table rows in order, with the words a reader knows them by."""


def crowdpatch(*args: object, cwd: Path) -> None:
    command = [sys.executable, "-m", "crowdpatch", *(str(a) for a in args)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, cwd=cwd, check=True, stdin=subprocess.DEVNULL)


def build_studies(work: Path, images: int | None) -> None:
    """The two studies, each step skipped when its output is there already."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "cut" / "crowdpatch.toml").is_file():
        sizes = ["--images-count", images] if images else []
        crowdpatch("init", "cut", "--builtin", "--cutouts", SOURCES[0], "--cutouts", SOURCES[1], *sizes, cwd=work)
    if not (work / "cut-fixed" / "crowdpatch.toml").is_file():
        data = work / "cut" / "data"
        crowdpatch(
            "init", "cut-fixed", "--images", data / "images", "--labels", data / "labels.csv",
            "--masks", data / "masks", "--target", "object", "--planner", "fixed", cwd=work,
        )  # fmt: skip
        config = work / "cut-fixed" / "crowdpatch.toml"
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('refine = "grabcut"', 'refine = "none"'), encoding="utf-8")
    for study in ("cut", "cut-fixed"):
        if not any((work / study / "masks" / "soft").glob("*.png")):
            for step in ("propose", "simulate", "masks"):
                crowdpatch(step, study, cwd=work)


def crowd_figures(project_dir: Path) -> dict[str, float]:
    """Modeled human seconds per image and mean mask IoU of a study."""
    project = Project.open(project_dir)
    try:
        with project.sessions() as session:
            seconds = session.scalar(
                select(func.sum(AnswerRow.seconds))
                .join(TaskRow, AnswerRow.task_id == TaskRow.id)
                .where(TaskRow.project_id == project.id, TaskRow.kind != "polygon")
            )
            images = session.scalar(select(func.count()).where(ImageRow.project_id == project.id))
            iou = session.scalar(
                select(func.avg(MaskRow.iou))
                .join(ImageRow, ImageRow.id == MaskRow.image_id)
                .where(ImageRow.project_id == project.id, MaskRow.source == "patch")
            )
    finally:
        project.close()
    return {"seconds": float(seconds or 0.0) / max(1, images), "iou": float(iou or 0.0)}


def table_rows(results: dict, crowd: dict[str, dict[str, float]]) -> list[dict]:
    rows = []
    for guide, label in GUIDE_NAMES.items():
        runs = [r for r in results["runs"] if r["config"]["guide"] == guide]
        if not runs:
            continue
        worst = [r["test"]["worst_group"] for r in runs]
        mean = lambda key: statistics.fmean(r["test"][key] for r in runs)  # noqa: E731
        figures = crowd.get(guide)
        rows.append(
            {
                "guide": label,
                "worst-group accuracy per seed": ", ".join(f"{w:.2f}" for w in worst),
                "mean ± std": f"{statistics.fmean(worst):.2f} ± {statistics.stdev(worst) if len(worst) > 1 else 0:.2f}",
                "accuracy": mean("accuracy"),
                "energy in mask": mean("energy_in_mask"),
                "pointing game": mean("pointing_game"),
                "human s/img": f"{figures['seconds']:.0f}" if figures else ("79" if guide == "gt" else "0"),
                "mask IoU": f"{figures['iou']:.2f}" if figures else ("1.00" if guide == "gt" else "-"),
                "train s/run": f"{statistics.fmean(r['train_seconds'] for r in runs):.0f}",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="Folder of the two studies (reused when there).")
    parser.add_argument("--images", type=int, default=None, help="Benchmark images (default: the built-in 1,600).")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--loss", default="bgswap+cam", help="Attention loss of every guided run.")
    parser.add_argument("--model", default="smallcnn", help="smallcnn (CPU), resnet18, resnet34 or resnet50.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto.")
    parser.add_argument("--out", type=Path, default=None, help="Experiment folder (default: WORK/experiment).")
    parser.add_argument("--write", action="store_true", help="Write the table to docs/benchmarks.md.")
    args = parser.parse_args()
    work = args.work.resolve()
    out = (args.out or work / "experiment").resolve()
    build_studies(work, args.images)
    if not (out / "results.json").is_file():
        crowdpatch(
            "experiment", "cut", "--guides", "none,saliency,patch,gt", "--patch-from", "fixed=cut-fixed",
            "--seeds", args.seeds, "--epochs", args.epochs, "--image-size", 64, "--device", args.device,
            "--model", args.model,
            "--loss", args.loss, "--out", out, cwd=work,
        )  # fmt: skip
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    crowd = {"patch": crowd_figures(work / "cut"), "patch-fixed": crowd_figures(work / "cut-fixed")}
    rows = table_rows(results, crowd)
    config = results["runs"][0]["config"]
    options = "".join(
        f" --{name} {config[name]}"
        for name, default in (("loss", "bgswap+cam"), ("model", "smallcnn"), ("device", "cpu"))
        if config[name] != default
    )
    device = results["runs"][0].get("device", config["device"])
    where = f"{os.cpu_count()} CPU cores ({cpu_model()})" if device == "cpu" else f"one GPU ({device})"
    text = (
        f"`python bench/cutouts.py --work DIR{options} --write` ({config['model']}, {args.epochs} epochs, trained at "
        f"64 px on {where}, loss `{config['loss']}` for every guided run, model chosen on validation worst-group "
        f"accuracy; report: `DIR/experiment/index.html`)\n\n" + markdown_table(rows)
    )
    print(text)
    if args.write:
        write_section("cutouts", text)


if __name__ == "__main__":
    main()
