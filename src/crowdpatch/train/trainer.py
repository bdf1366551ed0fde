"""The training loop: CPU, one GPU (bf16 autocast) or several processes (torchrun, DDP).

Model selection is explicit: the epoch with the best validation worst-group accuracy wins (ties:
the later epoch), since mean accuracy on biased validation data rewards the shortcut.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from crowdpatch.train.evaluate import evaluate
from crowdpatch.train.losses import Batch, build_objective
from crowdpatch.train.models import create_model
from crowdpatch.train.tensors import GuidedDataset, SplitTensors


@dataclass
class TrainConfig:
    """One training run; every field is a CLI option of `crowdpatch train`."""

    guide: str = "none"
    loss: str = "bgswap+cam"
    weight: float = 1.0
    model: str = "smallcnn"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int = 64
    seed: int = 0
    device: str = "auto"
    weights: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    config: TrainConfig
    best_epoch: int
    val: dict
    test: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    state_dict: dict | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked, but no CUDA GPU is available here")
    return torch.device(name)


def distributed_context() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def fit(
    config: TrainConfig,
    splits: dict[str, SplitTensors],
    progress: Callable[[int, dict], None] | None = None,
) -> TrainResult | None:
    """Train and select a model; returns the result on rank 0 (None on other ranks)."""
    rank, world = distributed_context()
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)
    train = splits["train"]
    val = splits.get("val") or train
    test = splits.get("test") or val
    model = create_model(
        config.model, len(train.class_names), config.image_size, Path(config.weights) if config.weights else None
    )
    model.to(device)
    objective = build_objective(config.loss if config.guide != "none" else "none", config.weight, model)
    net = DistributedDataParallel(model) if world > 1 else model
    sampler = (
        DistributedSampler(GuidedDataset(train), world, rank, shuffle=True, seed=config.seed) if world > 1 else None
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        GuidedDataset(train),
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        drop_last=len(train) > config.batch_size,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * len(loader)))
    # bf16 autocast is safe without loss scaling; on the CPU plain fp32 is faster for small models.
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    augment_generator = torch.Generator().manual_seed(config.seed + 1)
    best_score, best_state, best_epoch, history = -math.inf, None, 0, []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        totals: dict[str, torch.Tensor] = {}
        for images, labels, _, masks, has_mask in loader:
            batch = Batch(images.to(device), labels.to(device), masks.to(device), has_mask.to(device))
            with autocast:
                loss, _, parts = objective.loss(net, batch, augment_generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value / len(loader)
        if rank == 0:
            metrics = evaluate(model, val, device)
            losses = {key: float(value) for key, value in totals.items()}
            record = {
                "epoch": epoch,
                **losses,
                "val_accuracy": metrics["accuracy"],
                "val_worst_group": metrics["worst_group"],
            }
            history.append(record)
            if metrics["worst_group"] >= best_score:
                best_score, best_epoch = metrics["worst_group"], epoch
                best_state = copy.deepcopy(model.state_dict())
            if progress:
                progress(epoch, record)
    seconds = time.perf_counter() - start
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    model.load_state_dict(best_state)
    return TrainResult(
        config=config,
        best_epoch=best_epoch,
        val=evaluate(model, val, device),
        test=evaluate(model, test, device),
        history=history,
        seconds=seconds,
        device=str(device),
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
    )
