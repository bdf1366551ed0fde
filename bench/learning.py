"""Learning from the crowd: the precise planner with CSNet on Weizmann horses, with and without fine-tuning.

Both runs take the horses in the study's order (file order) in rounds of ``--every`` images (the
simulated crowd finishes a round before the next is proposed); with fine-tuning, CSNet is tuned on
every mask finished so far between rounds (``[saliency] finetune_every``). Per block of ``--block``
images along the order it prints the modeled human seconds per image, the mask IoU, the saliency
map's own IoU and the share of outline checks accepted. 10% worker error, 10% spammers (the
simulated crowd's defaults, as in bench/mask_quality.py). With --write the table goes to
docs/benchmarks.md.

    python bench/learning.py --limit 100 --every 25 --block 50 --write
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from benchkit import MASK_DATASETS, markdown_table, write_section
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.kinds import OUTLINE, YES
from crowdpatch.datasets import load_mask
from crowdpatch.masks.build import saliency_binary
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.project import Project
from crowdpatch.saliency.stored import load_saliency
from crowdpatch.store.models import AnswerRow, ImageRow, MaskRow, TaskRow
from crowdpatch.workflow import SilentProgress, run_bench_masks
from mask_quality import CSNET


def config(every: int, finetune: bool, seed: int) -> ProjectConfig:
    result = ProjectConfig(name="bench", target="horse")
    result.simulation.seed = seed
    result.crowd.planner = "precise"
    result.precise.correction_rounds = 2
    result.saliency.backend = "csnet"
    result.saliency.weights = str(CSNET)
    result.simulation.rounds = every
    result.saliency.finetune_every = every if finetune else 0
    return result


def per_image(project_dir: Path) -> list[dict]:
    """Each image's modeled seconds, mask IoU, saliency IoU and outline decision, in the study's order."""
    project = Project.open(project_dir)
    with project.sessions() as session:
        seconds = dict(
            session.execute(
                select(TaskRow.image_id, func.sum(AnswerRow.seconds))
                .join(AnswerRow, AnswerRow.task_id == TaskRow.id)
                .where(TaskRow.project_id == project.id, TaskRow.kind != "polygon")
                .group_by(TaskRow.image_id)
            ).all()
        )
        ious = dict(
            session.execute(
                select(MaskRow.image_id, MaskRow.iou)
                .join(ImageRow, ImageRow.id == MaskRow.image_id)
                .where(ImageRow.project_id == project.id, MaskRow.source == "patch")
            ).all()
        )
        outlines = dict(
            session.execute(
                select(TaskRow.image_id, TaskRow.decision).where(
                    TaskRow.project_id == project.id, TaskRow.kind == OUTLINE
                )
            ).all()
        )
        images = session.execute(
            select(ImageRow.id, ImageRow.saliency_path, ImageRow.mask_path, ImageRow.width, ImageRow.height)
            .where(ImageRow.project_id == project.id, ImageRow.stage == "done")
            .order_by(ImageRow.id)
        ).all()
    project.close()
    return [
        {
            "seconds": seconds.get(row.id, 0.0),
            "iou": ious.get(row.id),
            "saliency": mask_iou(
                saliency_binary(load_saliency(row.saliency_path)),
                load_mask(Path(row.mask_path), (row.width, row.height)),
            ),
            "outline": outlines.get(row.id),
        }
        for row in images
    ]


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def blocks(rows: list[dict], size: int, label: str) -> list[dict]:
    out = []
    for start in range(0, len(rows), size):
        block = rows[start : start + size]
        asked = [row["outline"] for row in block if row["outline"] is not None]
        out.append(
            {
                "run": label,
                "images": f"{start + 1}-{start + len(block)}",
                "s/img": mean([row["seconds"] for row in block]),
                "mask IoU": mean([row["iou"] for row in block]),
                "saliency IoU": mean([row["saliency"] for row in block]),
                "outlines accepted": f"{sum(d == YES for d in asked)}/{len(asked)}",
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100, help="horses, in file order")
    parser.add_argument("--every", type=int, default=25, help="images per round; fine-tuned after each")
    parser.add_argument("--block", type=int, default=50, help="images per row of the table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "crowdpatch_learning")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    images, masks = MASK_DATASETS["weizmann_horse"]
    rows = []
    for label, tuned in (("as shipped", False), ("fine-tuned", True)):
        target = args.out / label.replace(" ", "-")
        shutil.rmtree(target, ignore_errors=True)
        start = time.perf_counter()
        run_bench_masks(images, masks, target, config(args.every, tuned, args.seed), SilentProgress(), args.limit)
        found = blocks(per_image(target / "project"), args.block, label)
        print(f"{label}: {time.perf_counter() - start:.0f} s", flush=True)
        print(markdown_table(found), flush=True)
        rows.extend(found)
    table = markdown_table(rows)
    print(table)
    if args.write:
        command = f"python bench/learning.py --limit {args.limit} --every {args.every} --block {args.block}"
        command += f" --seed {args.seed}"
        note = (
            f"`{command}` (`--write`): the precise planner with CSNet-L-x2 on the first {args.limit} Weizmann "
            f"horses in rounds of {args.every}, CSNet as shipped against CSNet fine-tuned on the crowd's finished "
            "masks between rounds; 10% worker error, 10% spammers; modeled seconds."
        )
        write_section("learning", note + "\n\n" + table)


if __name__ == "__main__":
    main()
