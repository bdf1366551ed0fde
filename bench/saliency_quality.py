"""How good is each saliency backend at step 1, on Weizmann horses (or GrabCut)?

For every image: mean saliency inside / outside the ground-truth mask, and the IoU of the map
thresholded the way step 1 thresholds it ('adaptive': 2x the map's mean) with the mask; then
the mean over images and the throughput (images per second, prediction only, loading excluded).
The row ``opencv-spectral-raw`` is OpenCV's spectral residual called once on the full image
with its own defaults: the setting of the reference figures in shared/data/MANIFEST.md.

Network backends take ``--weights``: ``csnet`` (PyTorch) needs the CSNet checkpoint;
``csnet-onnx`` exports that checkpoint to a temporary ONNX file and runs it with the ``onnx``
backend (onnxruntime); ``onnx`` runs ``--onnx FILE``. They predict in batches of ``--batch``
images (the throughput column counts preprocessing, inference and resizing back, not loading).
GrabCut masks (``--dataset grabcut``) have a 128 border band that is left out of every metric.

    python bench/saliency_quality.py [--data DIR] [--limit N] [--backends spectral finegrained]
    python bench/saliency_quality.py --backends csnet csnet-onnx \
        --weights ../shared/data/weights/csnet/csnet-L-x2.pth.tar
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from crowdpatch.datasets import MASK_IGNORE, load_folder_dataset, load_mask, load_rgb
from crowdpatch.masks import mask_iou
from crowdpatch.saliency import create_backend, normalize_unit, resolve_threshold

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "weizmann_horse"
IGNORE = MASK_IGNORE  # mask_iou leaves these pixels out
RAW_BASELINE = "opencv-spectral-raw"


LAYOUTS = {
    "weizmann_horse": ("rgb", "figure_ground"),
    "grabcut": ("images", "masks"),
    "coco_mval_subset": ("img", "gt"),
}
"""Image and mask sub-folders of each set in shared/data."""


def load_pairs(folder: Path, dataset: str, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, uint8 mask: 0 background, 1 object, 255 ignore) pairs, read as crowdpatch reads them."""
    images, masks = (folder / sub for sub in LAYOUTS[dataset])
    records = [r for r in load_folder_dataset(images, None, masks).records if r.mask_path is not None][:limit]
    if not records:
        raise SystemExit(f"no images with masks in {images}: pass --data <{dataset} folder>")
    pairs = []
    for record in records:
        image = load_rgb(record.path)
        pairs.append((image, load_mask(record.mask_path, (image.shape[1], image.shape[0]))))
    return pairs


Predictor = Callable[[list[np.ndarray]], list[np.ndarray]]


def raw_spectral() -> Predictor:
    algorithm = cv2.saliency.StaticSaliencySpectralResidual_create()

    def predict(image: np.ndarray) -> np.ndarray:
        _, saliency = algorithm.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return normalize_unit(saliency)

    return lambda images: [predict(image) for image in images]


def predictor(name: str, weights: Path | None, onnx: Path | None, batch: int, workdir: Path) -> Predictor:
    if name == RAW_BASELINE:
        return raw_spectral()
    if name == "csnet":
        backend = create_backend("csnet", weights=str(need(weights, name)), batch_size=batch)
        return backend.predict
    if name == "csnet-onnx":
        from crowdpatch.saliency.csnet import export_onnx

        path = export_onnx(need(weights, name), workdir / "csnet.onnx")
        return create_backend("onnx", weights=str(path), sigmoid=True, batch_size=batch).predict
    if name == "onnx":
        return create_backend("onnx", weights=str(need(onnx, "onnx (--onnx FILE)")), batch_size=batch).predict
    backend = create_backend(name)
    return lambda images: [backend.predict([image])[0] for image in images]


def need(path: Path | None, name: str) -> Path:
    if path is None:
        raise SystemExit(f"backend {name} needs a model file: pass --weights / --onnx")
    return path


def evaluate(predict: Predictor, pairs: list[tuple[np.ndarray, np.ndarray]], batch: int = 8) -> dict[str, float]:
    inside, outside, ious, seconds = [], [], [], 0.0
    predict([pairs[0][0]])  # warm-up (allocator, oneDNN kernels, onnxruntime arena): not timed
    for start in range(0, len(pairs), batch):
        group = pairs[start : start + batch]
        begin = time.perf_counter()
        maps = predict([image for image, _ in group])
        seconds += time.perf_counter() - begin
        for saliency, (_, mask) in zip(maps, group):
            known = mask != IGNORE
            obj = (mask == 1) & known
            inside.append(float(saliency[obj].mean()))
            outside.append(float(saliency[~obj & known].mean()))
            ious.append(mask_iou(saliency > resolve_threshold(saliency, "adaptive"), mask))
    return {
        "in": float(np.mean(inside)),
        "out": float(np.mean(outside)),
        "iou": float(np.mean(ious)),
        "images_per_s": len(pairs) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="Weizmann horse folder (holds rgb/ and figure_ground/)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted by name)")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=[RAW_BASELINE, "spectral", "finegrained"],
        help="spectral, finegrained, opencv-spectral-raw, csnet, csnet-onnx, onnx",
    )
    parser.add_argument("--dataset", choices=sorted(LAYOUTS), default="weizmann_horse")
    parser.add_argument("--weights", type=Path, default=None, help="CSNet checkpoint (csnet, csnet-onnx)")
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX saliency model (backend onnx)")
    parser.add_argument("--batch", type=int, default=8, help="images per predict() call")
    args = parser.parse_args()

    data = args.data if args.data != DEFAULT_DATA or args.dataset == "weizmann_horse" else SHARED_DATA / args.dataset
    pairs = load_pairs(data, args.dataset, args.limit)
    print(f"{len(pairs)} images from {data}; IoU at 2x the map's mean; batches of {args.batch}")
    print("| backend | in | out | IoU | images/s |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.backends:
            result = evaluate(predictor(name, args.weights, args.onnx, args.batch, Path(workdir)), pairs, args.batch)
            print(
                f"| {name} | {result['in']:.3f} | {result['out']:.3f} | {result['iou']:.3f} | "
                f"{result['images_per_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
