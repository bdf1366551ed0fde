"""Whole runs built from the steps: the demo and `bench-masks` (the same simulated pipeline on any folder)."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Protocol

import numpy as np
from sqlalchemy import select

from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import BenchmarkSpec, DatasetLoad, InputProblem, generate_benchmark, load_folder_dataset, load_mask, load_rgb
from crowdpatch.ingest import IngestReport, add_images
from crowdpatch.masks.build import MaskBuilder, MaskStats, build_masks
from crowdpatch.project import Project
from crowdpatch.propose import ProposeReport, propose
from crowdpatch.report import AskedWindow, SampleFigure, write_report
from crowdpatch.saliency.stored import load_saliency
from crowdpatch.simulate.run import SimulationReport, run_simulation
from crowdpatch.store.models import ImageRow
from crowdpatch.summary import summarize

REPORT_SAMPLES = 8


class StepProgress(Protocol):
    """How a run shows progress: ``step(name, total)`` returns a context whose value advances by n."""

    def step(self, name: str, total: int | None) -> ContextManager[Callable[..., None]]: ...


class SilentProgress:
    """Progress for library callers and tests: nothing shown."""

    def step(self, name: str, total: int | None) -> ContextManager[Callable[..., None]]:
        return nullcontext(lambda *args, **kwargs: None)


@dataclass
class RunResult:
    summary: dict[str, Any]
    summary_path: Path
    report_path: Path
    ingest: IngestReport
    proposal: ProposeReport
    simulation: SimulationReport
    problems: list[str]


def create_project(directory: Path, config: ProjectConfig, dataset: DatasetLoad, progress: StepProgress) -> tuple[Project, IngestReport]:
    project = Project.create(directory, config)
    with progress.step("registering images", len(dataset.records)) as advance:
        report = add_images(project, dataset.records, advance)
    report.problems[:0] = dataset.problems
    return project, report


def run_pipeline(project: Project, progress: StepProgress, workers: int | None = None) -> tuple[ProposeReport, SimulationReport, list[MaskStats]]:
    """propose -> simulate -> masks on an existing project; each step resumes where it stopped."""
    with project.sessions() as session:
        total = len(session.scalars(select(ImageRow.id).where(ImageRow.project_id == project.id)).all())
    with progress.step("step 1: saliency clusters", total) as advance:
        proposal = propose(project, advance)
    with progress.step("step 2: simulated crowd answers", None) as advance:
        simulation = run_simulation(project, workers, progress=lambda stored, open_: advance(1))
    with progress.step("aggregating votes into masks", total) as advance:
        stats = build_masks(project, ("png", "npy", "coco"), advance)
    return proposal, simulation, stats


def sample_figures(project: Project, stats: list[MaskStats], count: int = REPORT_SAMPLES) -> list[SampleFigure]:
    builder = MaskBuilder(project)
    samples = []
    with project.sessions() as session:
        for stat in stats[:count]:
            image = session.get(ImageRow, stat.image_id)
            rgb = load_rgb(Path(image.path))
            gt = load_mask(Path(image.mask_path), (image.width, image.height)) if image.mask_path else None
            saliency = load_saliency(image.saliency_path) if image.saliency_path else None
            mask = builder.image_mask(stat.image_id)
            samples.append(
                SampleFigure(
                    name=stat.name,
                    image=rgb,
                    saliency=saliency,
                    regions=mask.regions,
                    windows=[AskedWindow(w.box, w.level, w.posterior) for w in mask.windows],
                    soft_mask=mask.soft,
                    gt_mask=gt,
                    iou=stat.iou,
                )
            )
    return samples


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_outputs(project: Project, out: Path, title: str, summary: dict[str, Any], stats: list[MaskStats], notes: list[str]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(summary, out / "summary.json")
    report_path = write_report(out / "report", title, summary, sample_figures(project, stats), notes)
    return summary_path, report_path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finish(project: Project, out: Path, title: str, ingest: IngestReport, proposal: ProposeReport,
            simulation: SimulationReport, stats: list[MaskStats]) -> RunResult:
    summary = summarize(project, stats, simulation.latency_seconds)
    problems = [str(p) for p in ingest.problems + proposal.problems]
    notes = [
        f"{simulation.workers} simulated workers, {simulation.banned} banned on gold; "
        f"latency {simulation.latency_seconds:.0f} s of simulated wall-clock.",
        "Human times are modeled from the literature (config [time_model]); polygon = "
        f"{project.config.time_model.polygon:g} s per object.",
        *[f"input problem: {p}" for p in problems],
    ]
    summary_path, report_path = write_outputs(project, out, title, summary, stats, notes)
    return RunResult(summary, summary_path, report_path, ingest, proposal, simulation, problems)


def demo_config(name: str, seed: int) -> ProjectConfig:
    config = ProjectConfig(name=name, target="object")
    config.simulation.seed = seed
    return config


DEMO_GUIDES = ("none", "patch", "gt")
DEMO_IMAGES = {True: 24, False: 1500}
DEMO_EPOCHS = 30


def run_demo(out: Path, quick: bool, seed: int, progress: StepProgress, images: int | None = None,
             train: bool | None = None, epochs: int = DEMO_EPOCHS) -> RunResult:
    """The built-in biased benchmark end to end with a simulated crowd, in ``out``.

    The full demo (``train`` defaults to ``not quick``) then trains a classifier per guide (none,
    patch masks, GT masks) and adds test accuracy, worst-group accuracy and attention to the summary.
    """
    out = Path(out)
    spec = BenchmarkSpec(n_images=images or DEMO_IMAGES[quick], size=64, seed=seed)
    with progress.step("generating the built-in benchmark", spec.n_images) as advance:
        labels = generate_benchmark(out / "data", spec, advance)
    dataset = load_folder_dataset(out / "data" / "images", labels, out / "data" / "masks")
    config = demo_config("demo", seed)
    config.images_dir, config.masks_dir = str(out / "data" / "images"), str(out / "data" / "masks")
    project, ingest = create_project(out / "project", config, dataset, progress)
    proposal, simulation, stats = run_pipeline(project, progress)
    result = _finish(project, out, "crowdpatch demo", ingest, proposal, simulation, stats)
    result.summary["dataset"] = "builtin"
    twin, result.summary["adaptive"] = run_adaptive_twin(project, out / "project-adaptive", dataset, progress)
    write_summary(result.summary, result.summary_path)
    if train if train is not None else not quick:
        result.summary.update(train_guides(project, out / "report" / "experiment", seed, epochs, progress))
        result.summary["adaptive"]["accuracy"] = train_patch_guide(twin, seed, epochs, progress)
        write_summary(result.summary, result.summary_path)
    return result


def run_adaptive_twin(project: Project, directory: Path, dataset: DatasetLoad, progress: StepProgress) -> tuple[Project, dict[str, Any]]:
    """The same images and simulated crowd under the adaptive planner: its project and the summary's ``adaptive`` figures."""
    config = project.config.model_copy(deep=True)
    config.name = f"{config.name}-adaptive"
    config.crowd.planner = "adaptive"
    config.db_url = None
    twin, _ = create_project(directory, config, dataset, progress)
    _, _, stats = run_pipeline(twin, progress)
    summary = summarize(twin, stats)
    return twin, {
        "answers_per_image": summary["answers_per_image"],
        "modeled_seconds_per_image": summary["modeled_seconds_per_image"]["patch"],
        "mask_iou": summary["mask_iou"]["patch"],
        "speedup_vs_polygon": summary["speedup_vs_polygon"],
    }


def train_patch_guide(project: Project, seed: int, epochs: int, progress: StepProgress) -> dict[str, float]:
    """The demo classifier trained with this project's crowd masks: test accuracy and worst-group accuracy."""
    from crowdpatch.train.data import load_splits
    from crowdpatch.train.runner import result_record
    from crowdpatch.train.trainer import TrainConfig, fit

    config = TrainConfig(epochs=epochs, seed=seed, image_size=64, guide="patch")
    splits = load_splits(project, "patch", config.image_size)
    with progress.step(f"training with the adaptive planner's masks ({config.model}, {config.loss})", epochs) as advance:
        trained = fit(config, splits, lambda epoch, record: advance(1))
    test = result_record(trained)["test"]
    return {"mean": test["accuracy"], "worst_group": test["worst_group"]}


def train_guides(project: Project, out: Path, seed: int, epochs: int, progress: StepProgress) -> dict[str, Any]:
    """One classifier per demo guide; the summary keys `accuracy` and `attention_energy_in_mask`."""
    from crowdpatch.train.data import load_splits
    from crowdpatch.train.experiment import ExperimentResult, summarize_runs, write_experiment
    from crowdpatch.train.runner import result_record
    from crowdpatch.train.trainer import TrainConfig, fit

    base = TrainConfig(epochs=epochs, seed=seed, image_size=64)
    experiment = ExperimentResult()
    splits = {}
    for guide in DEMO_GUIDES:
        splits[guide] = load_splits(project, guide, base.image_size)
        config = TrainConfig(**{**base.to_dict(), "guide": guide})
        with progress.step(f"training with guide '{guide}' ({config.model}, {config.loss if guide != 'none' else 'plain'})", epochs) as advance:
            trained = fit(config, splits[guide], lambda epoch, record: advance(1))
        experiment.runs.append(result_record(trained))
        experiment.models[guide] = trained.state_dict
    experiment.table = summarize_runs(experiment.runs)
    first = splits[DEMO_GUIDES[0]]
    write_experiment(experiment, first["test"], first["train"], base, out, [])
    tests = {run["config"]["guide"]: run["test"] for run in experiment.runs}
    return {
        "accuracy": {g: {"mean": t["accuracy"], "worst_group": t["worst_group"]} for g, t in tests.items()},
        "attention_energy_in_mask": {g: t["energy_in_mask"] for g, t in tests.items()},
        "training": {"model": base.model, "loss": base.loss, "epochs": epochs, "image_size": base.image_size,
                     "report": str(out / "index.html")},
    }


def run_bench_masks(images: Path, masks: Path, out: Path, config: ProjectConfig, progress: StepProgress,
                    limit: int | None = None, name: str | None = None) -> RunResult:
    """The simulated pipeline on a folder of real images with GT masks."""
    dataset = load_folder_dataset(images, None, masks)
    missing = [r for r in dataset.records if r.mask_path is None]
    records = [r for r in dataset.records if r.mask_path is not None][: limit or None]
    dataset = DatasetLoad(records, dataset.problems)
    config.images_dir, config.masks_dir = str(images), str(masks)
    project, ingest = create_project(Path(out) / "project", config, dataset, progress)
    ingest.problems.extend(_no_mask(r) for r in missing)
    proposal, simulation, stats = run_pipeline(project, progress)
    result = _finish(project, Path(out), f"bench-masks: {images}", ingest, proposal, simulation, stats)
    result.summary["dataset"] = name or Path(images).name
    write_summary(result.summary, result.summary_path)
    return result


def _no_mask(record) -> InputProblem:
    return InputProblem(str(record.path), "no ground-truth mask with the same stem; skipped")
