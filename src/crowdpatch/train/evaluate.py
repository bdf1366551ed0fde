"""Evaluation in one place (the WILDS habit): accuracy per group, worst group, and where the model looks.

Attention is read from the class activation map of the true class, which is exact for a model
that ends in global average pooling and a linear head, so no gradient tool is needed at
evaluation. It is scored against the ground-truth mask (ignore pixels excluded):
``energy_in_mask`` = share of the positive CAM inside the object (energy pointing game),
``pointing_game`` = the CAM's peak lies on the object, ``cam_iou`` = IoU of the min-max normalized
CAM at 0.5 with the object.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crowdpatch.train.models import AttentionNet
from crowdpatch.train.tensors import SplitTensors


def group_accuracy(predictions: torch.Tensor, split: SplitTensors) -> dict:
    """Accuracy overall, per group, and of the worst group (groups with no image are left out)."""
    correct = (predictions == split.labels).float()
    per_group = {}
    for index, name in enumerate(split.group_names):
        members = split.groups == index
        if bool(members.any()):
            per_group[name] = float(correct[members].mean())
    return {
        "accuracy": float(correct.mean()) if len(correct) else math.nan,
        "worst_group": min(per_group.values()) if per_group else math.nan,
        "mean_group": sum(per_group.values()) / len(per_group) if per_group else math.nan,
        "per_group": per_group,
    }


@torch.no_grad()
def predict(
    model: AttentionNet, split: SplitTensors, device: torch.device, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes and true-class CAMs upsampled to the image size (on the CPU)."""
    model.eval()
    predictions, cams = [], []
    size = split.images.shape[-2:]
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size].to(device)
        labels = split.labels[start : start + batch_size].to(device)
        out = model(images)
        cam = model.class_activation_map(out.features.float(), labels)
        cams.append(F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].cpu())
        predictions.append(out.logits.argmax(1).cpu())
    return torch.cat(predictions), torch.cat(cams)


def attention_quality(cams: torch.Tensor, gt: torch.Tensor) -> dict:
    """Energy in mask, pointing game and CAM IoU, averaged over images that have a GT mask with an object."""
    energy, pointing, iou = [], [], []
    for cam, truth in zip(cams, gt[:, 0]):
        valid = truth >= 0
        obj = truth == 1
        if not bool(obj.any()):
            continue
        positive = cam.clamp(min=0) * valid
        total = float(positive.sum())
        energy.append(float((positive * obj).sum()) / total if total > 0 else 0.0)
        peak = torch.argmax(torch.where(valid, cam, torch.full_like(cam, -math.inf)))
        pointing.append(float(obj.flatten()[peak]))
        low, high = float(cam[valid].min()), float(cam[valid].max())
        hot = ((cam - low) / (high - low) >= 0.5) if high > low else torch.zeros_like(obj)
        hot, objv = hot & valid, obj & valid
        union = float((hot | objv).sum())
        iou.append(float((hot & objv).sum()) / union if union else 1.0)
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return {"energy_in_mask": mean(energy), "pointing_game": mean(pointing), "cam_iou": mean(iou)}


def evaluate(model: AttentionNet, split: SplitTensors, device: torch.device) -> dict:
    predictions, cams = predict(model, split, device)
    return {**group_accuracy(predictions, split), **attention_quality(cams, split.gt)}
