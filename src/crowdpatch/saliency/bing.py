"""BING objectness boxes (Cheng et al. 2014, OpenCV contrib) as an alternative region proposer.

Class-agnostic boxes instead of saliency clusters: useful where the object is not the most salient
thing in the image (the COCO subset is such a set). The model files are OpenCV's
``ObjNessB2W8*.yml.gz``; give their folder with ``[saliency] proposer_model``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from crowdpatch.boxes import Box
from crowdpatch.saliency.clusters import Cluster

MODEL_FILES = ("ObjNessB2W8MAXBGR.idx.yml.gz", "ObjNessB2W8MAXBGR.wS1.yml.gz", "ObjNessB2W8MAXBGR.wS2.yml.gz")


def box_iou(a: Box, b: Box) -> float:
    inter_w = min(a.x1, b.x1) - max(a.x0, b.x0)
    inter_h = min(a.y1, b.y1) - max(a.y0, b.y0)
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    return inter / (a.area + b.area - inter)


class BingProposer:
    """The top boxes of OpenCV's BING, after non-maximum suppression and size limits."""

    def __init__(
        self, model_dir: str | Path, top_k: int = 3, min_area: float = 0.01, max_area: float = 0.9, nms_iou: float = 0.5
    ):
        model_dir = Path(model_dir)
        missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
        if missing:
            raise ValueError(f"{model_dir}: not a BING model folder (missing {', '.join(missing)})")
        self.model_dir = model_dir
        self.top_k, self.min_area, self.max_area, self.nms_iou = top_k, min_area, max_area, nms_iou

    def propose(self, image: np.ndarray) -> list[Cluster]:
        """Region proposals for one RGB image, best first, shaped like saliency clusters."""
        height, width = image.shape[:2]
        bing = cv2.saliency.ObjectnessBING_create()
        bing.setTrainingPath(str(self.model_dir))
        ok, boxes = bing.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok or boxes is None:
            return []
        kept: list[Box] = []
        # BING returns its boxes ranked, best first.
        for x0, y0, x1, y1 in boxes.reshape(-1, 4):
            left, top, right, bottom = (
                max(0, int(x0)),
                max(0, int(y0)),
                min(width, int(x1) + 1),
                min(height, int(y1) + 1),
            )
            if right <= left or bottom <= top:
                continue
            box = Box(left, top, right, bottom)
            share = box.area / (width * height)
            if share < self.min_area or share > self.max_area:
                continue
            if all(box_iou(box, other) < self.nms_iou for other in kept):
                kept.append(box)
            if len(kept) == self.top_k:
                break
        return [
            Cluster(
                box=box,
                component_box=box,
                mass=float(self.top_k - rank),
                area=box.area,
                outline=[[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]],
            )
            for rank, box in enumerate(kept)
        ]
