"""Attention masks out of the pipeline: file formats and quality against ground truth."""

from crowdpatch.masks.export import (
    CocoImage,
    coco_document,
    decode_rle,
    encode_rle,
    mask_names,
    write_binary_png,
    write_coco_json,
    write_npy,
    write_soft_png,
)
from crowdpatch.masks.metrics import IGNORE, mask_iou

__all__ = [
    "IGNORE",
    "CocoImage",
    "coco_document",
    "decode_rle",
    "encode_rle",
    "mask_iou",
    "mask_names",
    "write_binary_png",
    "write_coco_json",
    "write_npy",
    "write_soft_png",
]
