"""Fine-tuning CSNet on the crowd's finished masks, so a study's saliency maps learn its target.

A study of one target (horses, say) finishes masks as it goes; each is a (photo, mask) pair the
network can learn from. ``finetune`` runs a few epochs of binary cross-entropy on the network's
logits at its input size (photo and mask resized to it; a horizontal flip doubles the pairs),
with a small learning rate, a fixed seed and a capped number of CPU threads, so a study's run is
repeatable and leaves the other cores to the server. BatchNorm statistics stay frozen: a few dozen
pairs are too few to re-estimate them, and the convolutions adapt around them.

``save_finetuned`` writes the weights with their layout file next to them, where ``load_csnet``
(and so the ``csnet`` backend's ``weights`` option) finds it: nothing is ever downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from crowdpatch.saliency.csnet_model import CSNet, layer_config_path
from crowdpatch.saliency.network import IMAGENET_MEAN, IMAGENET_STD, prepare_batch


@dataclass
class FinetuneOptions:
    """How a fine-tuning run trains (the defaults suit a few dozen to a few hundred pairs on CPU)."""

    epochs: int = 3
    learning_rate: float = 2e-5
    batch_size: int = 4
    seed: int = 0
    threads: int = 1
    """CPU threads torch may use while training (restored afterwards)."""
    flip: bool = True
    """Train on each pair and its mirror image."""


@dataclass
class FinetuneResult:
    model: CSNet
    losses: list[float] = field(default_factory=list)
    """Mean training loss of each epoch."""


def training_batch(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos (RGB uint8) and their masks (boolean, photo-sized) -> the network's input and target at ``size``."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} photo(s) but {len(masks)} mask(s)")
    height, width = size
    inputs = torch.from_numpy(prepare_batch(list(images), size, IMAGENET_MEAN, IMAGENET_STD))
    targets = np.empty((len(masks), 1, height, width), np.float32)
    for index, (image, mask) in enumerate(zip(images, masks)):
        if mask.shape[:2] != image.shape[:2]:
            raise ValueError(f"mask {index} is {mask.shape[:2]}, its photo {image.shape[:2]}")
        small = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        targets[index, 0] = small > 0
    return inputs, torch.from_numpy(targets)


def mean_loss(model: CSNet, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 8) -> float:
    """The binary cross-entropy of ``model``'s logits against ``targets`` (no training)."""
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            logits = model(inputs[start : start + batch_size])
            total += float(
                F.binary_cross_entropy_with_logits(logits, targets[start : start + batch_size], reduction="sum")
            )
    return total / max(1, targets.numel())


def finetune(
    model: CSNet,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    size: tuple[int, int] = (224, 224),
    options: FinetuneOptions | None = None,
) -> FinetuneResult:
    """Train ``model`` in place on (photo, mask) pairs; returns it in eval mode with each epoch's loss."""
    options = options or FinetuneOptions()
    if not images:
        raise ValueError("fine-tuning needs at least one finished mask")
    if options.epochs < 1 or options.batch_size < 1 or options.threads < 1 or options.learning_rate <= 0:
        raise ValueError(f"fine-tuning options out of range: {options}")
    inputs, targets = training_batch(images, masks, size)
    if options.flip:
        inputs = torch.cat([inputs, inputs.flip(-1)])
        targets = torch.cat([targets, targets.flip(-1)])
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        generator = torch.Generator().manual_seed(options.seed)
        torch.manual_seed(options.seed)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=options.learning_rate)
        model.eval()  # frozen BatchNorm statistics (module docstring)
        losses = []
        for _ in range(options.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for start in range(0, len(order), options.batch_size):
                picked = order[start : start + options.batch_size]
                logits = model(inputs[picked])
                loss = F.binary_cross_entropy_with_logits(logits, targets[picked])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(picked)
            losses.append(total / len(order))
    finally:
        torch.set_num_threads(threads)
    return FinetuneResult(model.eval(), losses)


def save_finetuned(model: CSNet, out: str | Path) -> Path:
    """Write ``model``'s weights to ``out`` (``.pt``) and its layout file next to it, as ``load_csnet`` reads them."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"state_dict": model.state_dict()}, tmp)
    layout = layer_config_path(out)
    layout.write_text(json.dumps(model.layer_config), encoding="utf-8")
    tmp.replace(out)
    return out
