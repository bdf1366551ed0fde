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
from PIL import Image

from crowdpatch.masks import mask_iou
from crowdpatch.saliency import create_backend, normalize_unit, resolve_threshold

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "weizmann_horse"
IGNORE = 255  # crowdpatch's ignore value in uint8 masks (mask_iou leaves it out)
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


def load_grabcut(folder: Path, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, uint8 mask: 0 background, 1 object, 255 ignore) pairs from GrabCut's 0/128/255 masks."""
    paths = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in (".jpg", ".png", ".bmp"))[:limit]
    if not paths:
        raise SystemExit(f"no images in {folder / 'images'}: pass --data <grabcut folder>")
    pairs = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        raw = np.asarray(Image.open(folder / "masks" / f"{path.stem}.png").convert("L"))
        mask = np.where(raw > 191, 1, np.where(raw < 64, 0, IGNORE)).astype(np.uint8)
        pairs.append((image, mask))
    return pairs


def load_coco(folder: Path, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, 0/1 mask) pairs from the COCO subset: img/<stem>.jpg with gt/<stem>.png (0/255)."""
    paths = sorted(p for p in (folder / "img").iterdir() if p.suffix.lower() in (".jpg", ".png"))[:limit]
    if not paths:
        raise SystemExit(f"no images in {folder / 'img'}: pass --data <coco_mval_subset folder>")
    pairs = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        raw = np.asarray(Image.open(folder / "gt" / f"{path.stem}.png").convert("L"))
        pairs.append((image, (raw > 127).astype(np.uint8)))
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
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Weizmann horse folder (holds rgb/ and figure_ground/)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images (sorted by name)")
    parser.add_argument("--backends", nargs="+", default=[RAW_BASELINE, "spectral", "finegrained"],
                        help="spectral, finegrained, opencv-spectral-raw, csnet, csnet-onnx, onnx")
    parser.add_argument("--dataset", choices=["weizmann_horse", "grabcut", "coco_mval_subset"], default="weizmann_horse")
    parser.add_argument("--weights", type=Path, default=None, help="CSNet checkpoint (csnet, csnet-onnx)")
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX saliency model (backend onnx)")
    parser.add_argument("--batch", type=int, default=8, help="images per predict() call")
    args = parser.parse_args()

    data = args.data if args.data != DEFAULT_DATA or args.dataset == "weizmann_horse" else SHARED_DATA / args.dataset
    loader = {"grabcut": load_grabcut, "coco_mval_subset": load_coco}.get(args.dataset, load_horses)
    pairs = loader(data, args.limit)
    print(f"{len(pairs)} images from {data}; IoU at 2x the map's mean; batches of {args.batch}")
    print("| backend | in | out | IoU | images/s |\n| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.backends:
            result = evaluate(predictor(name, args.weights, args.onnx, args.batch, Path(workdir)), pairs, args.batch)
            print(f"| {name} | {result['in']:.3f} | {result['out']:.3f} | {result['iou']:.3f} | {result['images_per_s']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
