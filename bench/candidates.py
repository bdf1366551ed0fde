"""Masks drawn from extreme points, and what corrections add, on every real set: no crowd noise, no cost model.

For each image the object's true extreme points are jittered as an honest worker's clicks are
(``simulate.workers.EXTREME_JITTER``). The table gives the mean IoU of each way of drawing a mask
from them, the best of several (what a perfect pick reaches), and then up to two correction
rounds by an honest simulated worker (``simulate.workers.answer_correction``) on the better of the
two GrabCut masks (an honest pick's): each round's clicks, and the IoU after it. Sets are ordered worst first.

    python bench/candidates.py --limit 30
    python bench/candidates.py --limit 30 --write     # also into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from benchkit import DATA, MASK_DATASETS, markdown_table, write_section
from crowdpatch.datasets import load_mask, load_rgb
from crowdpatch.datasets.masks import MASK_IGNORE, MASK_OBJECT
from crowdpatch.masks import candidates
from crowdpatch.masks.candidates import (
    extreme_points_of,
    grabcut_corrected,
    grabcut_from_edges,
    grabcut_from_points,
    saliency_on_crop,
)
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.saliency import create_backend
from crowdpatch.simulate.workers import EXTREME_JITTER, SimulatedWorker, answer_correction

CSNET = DATA / "weights" / "csnet" / "csnet-L-x2.pth.tar"
HONEST = SimulatedWorker("bench", "honest", threshold=0.2, error_rate=0.0, speed=1.0)
ROUNDS = 2


def jittered(points: list[list[float]], rng: np.random.Generator, shape: tuple[int, int]) -> list[list[float]]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    size = float(np.sqrt((max(xs) - min(xs) + 1) * (max(ys) - min(ys) + 1)))
    height, width = shape
    return [
        [float(np.clip(x + rng.normal(0, EXTREME_JITTER * size), 0, width - 1)),
         float(np.clip(y + rng.normal(0, EXTREME_JITTER * size), 0, height - 1))]
        for x, y in points
    ]  # fmt: skip


def grabcut_from_quadrilateral(rgb: np.ndarray, points: list[list[float]]) -> np.ndarray:
    """The alternative start: probable object only inside the quadrilateral the points span (not kept)."""
    frame = candidates._Crop(rgb, points)
    labels, inside = frame.box_labels()
    labels[inside] = cv2.GC_PR_BGD
    array = np.asarray(points, dtype=np.float64)
    centre = array.mean(axis=0)
    ordered = array[np.argsort(np.arctan2(array[:, 1] - centre[1], array[:, 0] - centre[0]))]
    cv2.fillPoly(labels, [np.array([frame.local(x, y) for x, y in ordered], dtype=np.int32)], int(cv2.GC_PR_FGD))
    frame.seed(labels, points, candidates.SEED_RADIUS, cv2.GC_FGD)
    return frame.cut(labels)


def corrected(rgb, points, base, truth) -> tuple[list[float], list[int]]:
    """IoU after each honest correction round on ``base``, and each round's clicks (as the store chains them)."""
    obj, valid = truth == MASK_OBJECT, truth != MASK_IGNORE
    current, labelled, ious, clicks = base, [], [], []
    for _ in range(ROUNDS):
        answer = answer_correction(HONEST, current, obj, valid, np.random.default_rng(0))["clicks"]
        clicks.append(len(answer))
        if answer:
            labelled = labelled + [(x, y, not current[int(y), int(x)]) for x, y in answer]
            current = grabcut_corrected(rgb, points, current, labelled)
        ious.append(mask_iou(current, truth))
    return ious, clicks


def measure(name: str, images: Path, masks: Path, limit: int, csnet, spectral) -> dict:
    rng = np.random.default_rng(0)
    by_stem = {path.stem: path for path in masks.iterdir()}
    files = [path for path in sorted(images.iterdir()) if path.stem in by_stem]
    files = [files[i] for i in np.linspace(0, len(files) - 1, min(limit, len(files))).astype(int)]
    rows, start = [], time.perf_counter()
    for path in files:
        rgb = load_rgb(path)
        truth = load_mask(by_stem[path.stem], (rgb.shape[1], rgb.shape[0]))
        ends = extreme_points_of(truth == MASK_OBJECT)
        if ends is None:
            continue
        points = jittered(ends, rng, truth.shape)
        box, edges = grabcut_from_points(rgb, points), grabcut_from_edges(rgb, points)
        row = {
            "GrabCut, box start": mask_iou(box, truth),
            "GrabCut, quadrilateral start": mask_iou(grabcut_from_quadrilateral(rgb, points), truth),
            "GrabCut along edges": mask_iou(edges, truth),
            "spectral on the crop": mask_iou(saliency_on_crop(rgb, points, lambda c: spectral.predict([c])[0]), truth),
        }
        row["best of the two GrabCuts"] = max(row["GrabCut, box start"], row["GrabCut along edges"])
        if csnet is not None:
            crop = saliency_on_crop(rgb, points, lambda c: csnet.predict([c])[0])
            row["CSNet on the crop"] = mask_iou(crop, truth)
            row["best of the two GrabCuts, CSNet crop"] = max(row["best of the two GrabCuts"], row["CSNet on the crop"])
        picked = box if row["GrabCut, box start"] >= row["GrabCut along edges"] else edges
        ious, clicks = corrected(rgb, points, picked, truth)
        for number, (iou, count) in enumerate(zip(ious, clicks), start=1):
            row[f"round {number} clicks"] = count
            row[f"best GrabCut + {number} correction round(s)"] = iou
        rows.append(row)
    mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    return {"set": name, "images": len(rows), **mean, "run s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=30, help="images per set, spread over its sorted files")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    csnet = create_backend("csnet", weights=str(CSNET)) if CSNET.exists() else None
    spectral = create_backend("spectral")
    sets = [measure(name, *folders, args.limit, csnet, spectral) for name, folders in MASK_DATASETS.items()]
    sets.sort(key=lambda row: row["GrabCut, box start"])
    # One row per way of drawing the mask, one column per set (worst first): the methods compare across a line.
    table = markdown_table([{"": key, **{row["set"]: row[key] for row in sets}} for key in sets[0] if key != "set"])
    print(table)
    if args.write:
        note = (
            f"`python bench/candidates.py --limit {args.limit}`: true extreme points with an honest worker's jitter, "
            "no spammers, no time model; sets ordered worst first."
        )
        write_section("candidates", note + "\n\n" + table)


if __name__ == "__main__":
    main()
