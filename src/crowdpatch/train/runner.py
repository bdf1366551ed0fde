"""A training run of a project, written to ``runs/<name>/`` (metrics.json + model.pt)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch

from crowdpatch.train.tensors import SplitTensors
from crowdpatch.train.trainer import TrainConfig, TrainResult, fit


def run_name(config: TrainConfig) -> str:
    loss = config.loss if config.guide != "none" else "none"
    return f"{config.guide}-{loss.replace('+', '_')}-{config.model}-seed{config.seed}"


def result_record(result: TrainResult) -> dict:
    """Everything about a run but the weights, JSON-ready."""
    return {
        "config": result.config.to_dict(),
        "best_epoch": result.best_epoch,
        "val": result.val,
        "test": result.test,
        "history": result.history,
        "train_seconds": result.seconds,
        "device": result.device,
    }


def write_run(directory: Path, result: TrainResult) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(result.state_dict, directory / "model.pt")
    path = directory / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result_record(result), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def train_and_save(
    config: TrainConfig,
    splits: dict[str, SplitTensors],
    runs_dir: Path,
    progress: Callable[[int, dict], None] | None = None,
) -> TrainResult | None:
    result = fit(config, splits, progress)
    if result is not None:
        write_run(runs_dir / run_name(config), result)
    return result
