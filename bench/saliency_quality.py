"""How good is each offline saliency backend at step 1, on Weizmann horses?

For every image: mean saliency inside / outside the ground-truth mask, and the IoU of the map
thresholded the way step 1 thresholds it ('adaptive': 2x the map's mean) with the mask; then
the mean over images and the throughput (images per second, prediction only, loading excluded).
The row ``opencv-spectral-raw`` is OpenCV's spectral residual called once on the full image
with its own defaults: the setting of the reference figures in shared/data/MANIFEST.md.

    python bench/saliency_quality.py [--data DIR] [--limit N] [--backends spectral finegrained]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from crowdpatch.masks import mask_iou
from crowdpatch.saliency import create_backend, normalize_unit, resolve_threshold

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann_horse"
RAW_BASELINE = "opencv-spectral-raw"


def load_horses(folder: Path, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, uint8 0/1 mask at the photo's size) pairs; masks are stored smaller than photos."""
    names = sorted(p.name for p in (folder / "rgb").glob("*.jpg"))[:limit]
    if not names:
        raise SystemExit(f"no images in {folder / 'rgb'}: pass --data <weizmann_horse folder>")
    pairs = []
    for name in names:
        image = np.asarray(Image.open(folder / "rgb" / name).convert("RGB"))
        mask = np.asarray(Image.open(folder / "figure_ground" / name).convert("L"))
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        pairs.append((image, (mask > 127).astype(np.uint8)))
    return pairs


def raw_spectral() -> Callable[[np.ndarray], np.ndarray]:
    algorithm = cv2.saliency.StaticSaliencySpectralResidual_create()

    def predict(image: np.ndarray) -> np.ndarray:
        _, saliency = algorithm.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return normalize_unit(saliency)

    return predict


def predictor(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == RAW_BASELINE:
        return raw_spectral()
    backend = create_backend(name)
    return lambda image: backend.predict([image])[0]


def evaluate(predict: Callable[[np.ndarray], np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    inside, outside, ious, seconds = [], [], [], 0.0
    for image, mask in pairs:
        start = time.perf_counter()
        saliency = predict(image)
        seconds += time.perf_counter() - start
        obj = mask.astype(bool)
        inside.append(float(saliency[obj].mean()))
        outside.append(float(saliency[~obj].mean()))
        ious.append(mask_iou(saliency > resolve_threshold(saliency, "adaptive"), mask))
    return {
        "in": float(np.mean(inside)),
        "out": float(np.mean(outside)),
        "iou": float(np.mean(ious)),
        "images_per_s": len(pairs) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Weizmann horse folder (holds rgb/ and figure_ground/)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted by name)")
    parser.add_argument("--backends", nargs="+", default=[RAW_BASELINE, "spectral", "finegrained"])
    args = parser.parse_args()

    pairs = load_horses(args.data, args.limit)
    print(f"{len(pairs)} images from {args.data}; IoU at 2x the map's mean")
    print("| backend | in | out | IoU | images/s |\n| --- | --- | --- | --- | --- |")
    for name in args.backends:
        result = evaluate(predictor(name), pairs)
        print(f"| {name} | {result['in']:.3f} | {result['out']:.3f} | {result['iou']:.3f} | {result['images_per_s']:.1f} |")


if __name__ == "__main__":
    main()
