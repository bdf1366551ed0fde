"""The paper's comparison, extended: guide sources x seeds, one table (mean +/- std) and plots.

Every guided result is reported next to the unguided one, so a benchmark where plain training
already succeeds (no real shortcut) is visible at a glance.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from crowdpatch.train.evaluate import predict  # noqa: E402
from crowdpatch.train.models import create_model  # noqa: E402
from crowdpatch.train.runner import result_record, run_name  # noqa: E402
from crowdpatch.train.tensors import SplitTensors, denormalize  # noqa: E402
from crowdpatch.train.trainer import TrainConfig, fit, resolve_device  # noqa: E402

METRICS = ("accuracy", "worst_group", "energy_in_mask", "pointing_game", "cam_iou")


@dataclass
class ExperimentResult:
    runs: list[dict] = field(default_factory=list)
    table: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)
    """The first seed's weights per guide, for the CAM figure."""


def summarize_runs(runs: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per guide and metric: mean and std of the test figures over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for guide in dict.fromkeys(r["config"]["guide"] for r in runs):
        mine = [r for r in runs if r["config"]["guide"] == guide]
        table[guide] = {}
        for metric in METRICS:
            values = [r["test"][metric] for r in mine if not math.isnan(r["test"][metric])]
            table[guide][metric] = {
                "mean": statistics.fmean(values) if values else math.nan,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values),
            }
    return table


def run_experiment(
    splits_by_guide: dict[str, dict[str, SplitTensors]],
    base: TrainConfig,
    seeds: list[int],
    progress: Callable[[str], None] | None = None,
) -> ExperimentResult:
    result = ExperimentResult()
    for guide, splits in splits_by_guide.items():
        for seed in seeds:
            config = TrainConfig(**{**base.to_dict(), "guide": guide, "seed": seed})
            trained = fit(config, splits)
            record = result_record(trained)
            record["name"] = run_name(config)
            result.runs.append(record)
            if guide not in result.models:
                result.models[guide] = trained.state_dict
            if progress:
                progress(f"{guide} seed {seed}: test worst-group {trained.test['worst_group']:.3f}")
    result.table = summarize_runs(result.runs)
    return result


def markdown_table(table: dict) -> str:
    lines = ["| guide | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for guide, metrics in table.items():
        cells = [f"{m['mean']:.3f} ± {m['std']:.3f}" for m in metrics.values()]
        lines.append(f"| {guide} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_worst_group(table: dict, path: Path, runs: list[dict] | None = None) -> Path:
    """Mean test worst-group accuracy per guide (error bar: std over seeds), each seed as a dot."""
    guides = list(table)
    means = [table[g]["worst_group"]["mean"] for g in guides]
    stds = [table[g]["worst_group"]["std"] for g in guides]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(guides) + 1), 3), dpi=100)
    positions = range(len(guides))
    ax.bar(positions, means, yerr=stds, color=["#999999" if g == "none" else "#2a7ab9" for g in guides], capsize=4)
    for x, guide in zip(positions, guides):
        seeds = [r["test"]["worst_group"] for r in runs or [] if r["config"]["guide"] == guide]
        ax.plot([x] * len(seeds), seeds, "o", color="#222222", markersize=3, zorder=3)
    ax.set_xticks(list(positions), guides, rotation=20 if len(guides) > 4 else 0)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test worst-group accuracy")
    ax.set_title("attention guide vs shortcut")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cams(
    result: ExperimentResult, test: SplitTensors, train: SplitTensors, base: TrainConfig, path: Path, count: int = 6
) -> Path:
    """CAM overlays on bias-conflicting test images (the groups where class and background disagree)."""
    device = resolve_device(base.device)
    conflicting = conflicting_indices(test, train)[:count]
    guides = list(result.models)
    fig, axes = plt.subplots(
        len(guides) + 1,
        len(conflicting),
        figsize=(1.3 * len(conflicting), 1.4 * (len(guides) + 1)),
        dpi=90,
        squeeze=False,
    )
    subset = _subset(test, conflicting)
    pixels = denormalize(subset.images).permute(0, 2, 3, 1).numpy()
    for col in range(len(conflicting)):
        axes[0][col].imshow(pixels[col])
        axes[0][col].set_title(subset.group_names[int(subset.groups[col])].split("|")[0], fontsize=7)
    for row, guide in enumerate(guides, start=1):
        model = create_model(base.model, len(test.class_names), base.image_size)
        model.load_state_dict(result.models[guide])
        model.to(device)
        _, cams = predict(model, subset, device)
        for col in range(len(conflicting)):
            cam = cams[col].numpy()
            axes[row][col].imshow(pixels[col])
            axes[row][col].imshow(np.clip(cam / (np.abs(cam).max() + 1e-6), 0, 1), cmap="jet", alpha=0.45)
        axes[row][0].set_ylabel(guide, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def conflicting_indices(test: SplitTensors, train: SplitTensors) -> list[int]:
    """Test images from the groups that are rare in training: where class and background disagree."""
    counts = torch.bincount(train.groups, minlength=len(train.group_names)).float()
    rare = {g for g in range(len(counts)) if counts[g] < counts.max() * 0.5}
    picked = [i for i in range(len(test)) if int(test.groups[i]) in rare]
    return picked or list(range(len(test)))


def _subset(split: SplitTensors, indices: list[int]) -> SplitTensors:
    index = torch.tensor(indices, dtype=torch.long)
    return SplitTensors(
        images=split.images[index],
        labels=split.labels[index],
        groups=split.groups[index],
        guides=split.guides[index],
        has_guide=split.has_guide[index],
        gt=split.gt[index],
        class_names=split.class_names,
        group_names=split.group_names,
        names=[split.names[i] for i in indices],
    )


def write_experiment(
    result: ExperimentResult, test: SplitTensors, train: SplitTensors, base: TrainConfig, out: Path, notes: list[str]
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"table": result.table, "runs": result.runs}, indent=2) + "\n", encoding="utf-8"
    )
    bar = plot_worst_group(result.table, out / "worst_group.png", result.runs)
    cams = plot_cams(result, test, train, base, out / "cams.png")
    rows = "".join(
        f"<tr><th>{html.escape(guide)}</th>"
        + "".join(f"<td>{m['mean']:.3f} ± {m['std']:.3f}</td>" for m in metrics.values())
        + "</tr>"
        for guide, metrics in result.table.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>crowdpatch experiment</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}\
td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd}}</style></head><body>
<h1>Attention guides against the shortcut</h1>
<p>Test set balanced over (class, background) groups; model selected on validation worst-group accuracy;
mean ± std over {len({r["config"]["seed"] for r in result.runs})} seeds; \
model {html.escape(base.model)}, loss {html.escape(base.loss)}.</p>
<table><tr><th>guide</th>{"".join(f"<th>{m}</th>" for m in METRICS)}</tr>{rows}</table>
<ul>{"".join(f"<li>{html.escape(n)}</li>" for n in notes)}</ul>
<img src="{bar.name}" alt="worst-group accuracy per guide">\
<h2>Class activation maps on bias-conflicting test images</h2>
<img src="{cams.name}" alt="CAM overlays"></body></html>"""
    path = out / "index.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
