"""Whole runs built from the steps: the demo and `bench-masks` (the same simulated pipeline on any folder)."""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterator, Protocol

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from crowdpatch.config import CONFIG_FILENAME, ProjectConfig
from crowdpatch.datasets import (
    BenchmarkSpec,
    DatasetLoad,
    InputProblem,
    generate_benchmark,
    load_folder_dataset,
    load_mask,
    load_rgb,
)
from crowdpatch.ingest import IngestReport, add_images
from crowdpatch.learning import finetune_study
from crowdpatch.masks.build import MaskBuilder, MaskStats, build_masks
from crowdpatch.project import Project
from crowdpatch.propose import ProposeReport, propose
from crowdpatch.report import AskedWindow, SampleFigure, TrainingFigures, pick_samples, write_report
from crowdpatch.simulate.run import SimulationReport, run_simulation
from crowdpatch.store.models import AnswerRow, ImageRow, MaskRow, TaskRow
from crowdpatch.summary import summarize

if TYPE_CHECKING:
    from crowdpatch.train.trainer import TrainConfig

REPORT_PER_GROUP = 3
"""Images the report shows from each of the best, median and worst by mask IoU."""


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


def create_project(
    directory: Path, config: ProjectConfig, dataset: DatasetLoad, progress: StepProgress
) -> tuple[Project, IngestReport]:
    project = Project.create(directory, config)
    with progress.step("registering images", len(dataset.records)) as advance:
        report = add_images(project, dataset.records, advance)
    report.problems[:0] = dataset.problems
    return project, report


def run_pipeline(
    project: Project, progress: StepProgress, workers: int | None = None, label: str = ""
) -> tuple[ProposeReport, SimulationReport, list[MaskStats]]:
    """propose -> simulate -> masks on an existing project; each step resumes where it stopped.

    ``label`` names the pass in every progress line (the demo runs two planners on the same images).
    """
    prefix = f"{label}: " if label else ""
    with project.sessions() as session:
        total = len(session.scalars(select(ImageRow.id).where(ImageRow.project_id == project.id)).all())
    every = project.config.simulation.rounds or fine_tune_every(project.config)
    if every:
        with progress.step(f"{prefix}rounds of {every} images", total) as advance:
            proposal, simulation = simulate_in_rounds(project, every, advance, workers)
        with progress.step(f"{prefix}masks from the votes", total) as advance:
            stats = build_masks(project, ("png", "npy", "coco"), advance)
        return proposal, simulation, stats
    proposed = total - project.counts().get("images_new", 0)
    with progress.step(f"{prefix}saliency regions", total) as advance:
        advance(proposed)  # proposed by an earlier run
        proposal = propose(project, advance)
    answerable = total - project.counts().get("images_error", 0)
    with progress.step(f"{prefix}simulated crowd, images done", answerable) as advance:
        finished = FinishedImages(project, advance)
        simulation = run_simulation(project, workers, progress=finished)
        finished.update()
    with progress.step(f"{prefix}masks from the votes", total) as advance:
        stats = build_masks(project, ("png", "npy", "coco"), advance)
    return proposal, simulation, stats


def simulate_in_rounds(
    project: Project, every: int, advance: Callable[..., None], workers: int | None = None
) -> tuple[ProposeReport, SimulationReport]:
    """The study in rounds of ``every`` images in their order: propose them, let the crowd finish them, and, with
    ``[saliency] finetune_every``, fine-tune CSNet on every mask finished so far once the finished images reach
    its next multiple (``crowdpatch.learning``); the next rounds' maps come from the tuned network.

    Between rounds no question is open, so the fine-tuning runs outside any transaction and no map changes
    under a worker's eyes."""
    tune_every = fine_tune_every(project.config)
    tuned_at = 0
    proposal = ProposeReport()
    answers = latency = rejected = 0
    simulation = None
    while True:
        round_report = propose(project, limit=every)
        if not round_report.processed and not round_report.problems:
            break
        for name in ("processed", "clusters", "whole_image", "gold"):
            setattr(proposal, name, getattr(proposal, name) + getattr(round_report, name))
        proposal.first_questions.update(round_report.first_questions)
        proposal.problems.extend(round_report.problems)
        simulation = run_simulation(project, workers)
        answers, latency = answers + simulation.answers, latency + simulation.latency_seconds
        rejected += simulation.rejected_late
        advance(round_report.processed + len(round_report.problems))
        counts = project.counts()
        finished = counts.get("images_done", 0)
        if tune_every and counts.get("images_new", 0) and finished // tune_every > tuned_at // tune_every:
            finetune_study(project)
            tuned_at = finished
    if simulation is None:
        simulation = run_simulation(project, workers)
    simulation.answers, simulation.latency_seconds, simulation.rejected_late = answers, latency, rejected
    return proposal, simulation


def fine_tune_every(config: ProjectConfig) -> int:
    """Finished images between fine-tuning runs (0: none; only the csnet backend is fine-tuned)."""
    return config.saliency.finetune_every if config.saliency.backend == "csnet" else 0


class FinishedImages:
    """A simulation's progress as images whose questions are all answered, read from the store at most twice a second.

    Answers per image vary with what the crowd says (a "yes" opens follow-up questions), so the
    number of answers a run will need is unknown in advance; the number of images is not.
    """

    INTERVAL_SECONDS = 0.5

    def __init__(self, project: Project, advance: Callable[..., None]):
        self.project, self.advance = project, advance
        self.shown = 0
        self.checked = 0.0
        self.update()

    def __call__(self, stored: int, open_questions: int) -> None:
        if time.monotonic() - self.checked >= self.INTERVAL_SECONDS:
            self.update()

    def update(self) -> None:
        self.checked = time.monotonic()
        with self.project.sessions() as session:
            done = (
                session.scalar(
                    select(func.count())
                    .select_from(ImageRow)
                    .where(ImageRow.project_id == self.project.id, ImageRow.stage == "done")
                )
                or 0
            )
        if done > self.shown:
            self.advance(done - self.shown)
            self.shown = done


def _stored_soft_mask(project: Project, builder: MaskBuilder, image: ImageRow) -> np.ndarray:
    """The final soft mask as ``masks`` wrote it (after refinement), recomputed only when its file is gone."""
    with project.sessions() as session:
        file = session.scalar(select(MaskRow.file).where(MaskRow.image_id == image.id, MaskRow.source == "patch"))
    if file and Path(file).is_file():
        with Image.open(file) as png:
            return np.asarray(png.convert("L"), dtype=np.float32) / 255.0
    return builder.refined(builder.image_mask(image.id), image.path)


def sample_figures(
    project: Project, stats: list[MaskStats], per_group: int = REPORT_PER_GROUP
) -> list[tuple[str, SampleFigure]]:
    """The report's samples: the best, median and worst masks by IoU (see :func:`pick_samples`), with their group."""
    builder = MaskBuilder(project)
    threshold = project.config.patches.mask_threshold
    samples = []
    with project.sessions() as session:
        for group, index in pick_samples([s.iou for s in stats], per_group):
            stat = stats[index]
            image = session.get(ImageRow, stat.image_id)
            gt = load_mask(Path(image.mask_path), (image.width, image.height)) if image.mask_path else None
            mask = builder.image_mask(stat.image_id)
            samples.append(
                (
                    group,
                    SampleFigure(
                        name=stat.name,
                        image=load_rgb(Path(image.path)),
                        regions=mask.regions,
                        windows=[AskedWindow(w.box, w.level, w.posterior) for w in mask.windows],
                        mask=_stored_soft_mask(project, builder, image),
                        gt_mask=gt,
                        iou=stat.iou,
                        saliency_iou=stat.saliency_iou,
                        threshold=threshold,
                        points=mask.points,
                        clicks=mask.clicks,
                    ),
                )
            )
    return samples


def write_summary(summary: dict[str, Any], path: Path) -> Path:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_outputs(
    project: Project,
    out: Path,
    title: str,
    summary: dict[str, Any],
    stats: list[MaskStats],
    notes: list[str],
    training: TrainingFigures | None = None,
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    summary_path = write_summary(summary, out / "summary.json")
    report_path = write_report(out / "report", title, summary, sample_figures(project, stats), notes, training)
    return summary_path, report_path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def simulated_latency(project: Project) -> float:
    """Simulated wall-clock from the first question shown to the last answer, over every run of the simulation."""
    with project.sessions() as session:
        first, last = session.execute(
            select(func.min(AnswerRow.shown_at), func.max(AnswerRow.answered_at))
            .join(TaskRow)
            .where(TaskRow.project_id == project.id)
        ).one()
    return float(last - first) if first is not None and last is not None else 0.0


def run_notes(project: Project, summary: dict[str, Any], problems: list[str]) -> list[str]:
    return [
        (
            f"{summary['workers']} simulated workers, {summary['workers_banned']} banned on gold; "
            f"latency {summary.get('latency_seconds', 0.0):.0f} s of simulated wall-clock."
        ),
        (
            "Human times are modeled from the literature (config [time_model]); polygon = "
            f"{project.config.time_model.polygon:g} s per object."
        ),
        *[f"input problem: {p}" for p in problems],
    ]


def _finish(
    project: Project,
    out: Path,
    title: str,
    ingest: IngestReport,
    proposal: ProposeReport,
    simulation: SimulationReport,
    stats: list[MaskStats],
    extra: dict[str, Any] | None = None,
    training: TrainingFigures | None = None,
) -> RunResult:
    summary = summarize(project, stats, simulated_latency(project))
    summary.update(extra or {})
    problems = [str(p) for p in ingest.problems + proposal.problems]
    summary_path, report_path = write_outputs(
        project, out, title, summary, stats, run_notes(project, summary, problems), training
    )
    return RunResult(summary, summary_path, report_path, ingest, proposal, simulation, problems)


def demo_config(name: str, seed: int) -> ProjectConfig:
    config = ProjectConfig(name=name, target="object")
    config.simulation.seed = seed
    return config


DEMO_GUIDES = ("none", "patch", "gt")
DEMO_IMAGES = {True: 24, False: 300}
DEMO_EPOCHS = 30
DEMO_BATCH_SIZE = 16
"""Small batches: the 180 training images give 11 steps an epoch, enough for the guided classifiers to learn
the shapes."""
DEMO_MANIFEST = "demo.json"
"""What a demo folder was made with (images, seed): a second run with the same options resumes it."""


class DemoError(ValueError):
    """The output folder cannot hold this demo (another demo's options, or files that are not a demo's)."""


def prepare_demo_folder(out: Path, spec: BenchmarkSpec, fresh: bool) -> None:
    """Make ``out`` ready: resume a demo made with the same options, or (``fresh``) delete a previous demo first.

    Only a folder this function marked as a demo is ever deleted, so a mistyped ``--out`` cannot
    remove someone's files.
    """
    manifest = out / DEMO_MANIFEST
    wanted = {"images": spec.n_images, "image_size": spec.size, "seed": spec.seed}
    if manifest.is_file():
        if fresh:
            shutil.rmtree(out)
        else:
            try:
                held = json.loads(manifest.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                held = None
            if held != wanted:
                described = (
                    ", ".join(f"{k} {v}" for k, v in held.items()) if isinstance(held, dict) else "unknown options"
                )
                raise DemoError(
                    f"{out} holds a demo made with {described}; run it with those options to resume it, "
                    "or add --fresh to delete it and start over"
                )
    elif out.exists() and any(out.iterdir()):
        raise DemoError(f"{out} is not empty and holds no demo ({DEMO_MANIFEST} missing); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if not manifest.is_file():
        manifest.write_text(json.dumps(wanted) + "\n", encoding="utf-8")


def open_or_create_project(
    directory: Path, config: ProjectConfig, dataset: DatasetLoad, progress: StepProgress, label: str = ""
) -> tuple[Project, IngestReport]:
    """The project in ``directory``, created from ``config`` unless it exists; images not yet registered are added."""
    project = Project.open(directory) if (directory / CONFIG_FILENAME).is_file() else Project.create(directory, config)
    with progress.step(
        f"{label}: registering images" if label else "registering images", len(dataset.records)
    ) as advance:
        report = add_images(project, dataset.records, advance)
    report.problems[:0] = dataset.problems
    return project, report


def run_demo(
    out: Path,
    quick: bool,
    seed: int,
    progress: StepProgress,
    images: int | None = None,
    train: bool | None = None,
    epochs: int = DEMO_EPOCHS,
    fresh: bool = False,
) -> RunResult:
    """The built-in biased benchmark end to end with a simulated crowd, in ``out``.

    The same images are answered under the fixed planner and the adaptive one; the full demo
    (``train`` defaults to ``not quick``) then trains a classifier per guide (none, the fixed
    planner's masks, GT masks, the adaptive planner's masks) and adds test accuracy, worst-group
    accuracy and attention to the summary. Run again with the same options, it resumes: the
    benchmark and the projects are kept, every step skips work already done, and training runs
    whose metrics are stored are reused. ``fresh`` deletes a previous demo in ``out`` first.
    """
    out = Path(out)
    spec = BenchmarkSpec(n_images=images or DEMO_IMAGES[quick], size=64, seed=seed)
    prepare_demo_folder(out, spec, fresh)
    labels = out / "data" / "labels.csv"
    if not labels.is_file():  # written last, so its presence means the benchmark is complete
        with progress.step("generating the built-in benchmark", spec.n_images) as advance:
            labels = generate_benchmark(out / "data", spec, advance)
    dataset = load_folder_dataset(out / "data" / "images", labels, out / "data" / "masks")
    config = demo_config("demo", seed)
    config.images_dir, config.masks_dir = str(out / "data" / "images"), str(out / "data" / "masks")
    project, ingest = open_or_create_project(out / "project", config, dataset, progress, "fixed planner")
    proposal, simulation, stats = run_pipeline(project, progress, label="fixed planner")
    twin, adaptive = run_adaptive_twin(project, out / "project-adaptive", dataset, progress)
    extra: dict[str, Any] = {"dataset": "builtin", "adaptive": adaptive}
    training = None
    if train if train is not None else not quick:
        import torch

        with torch_threads(cpu_training_threads(torch.get_num_threads())):
            extra.update(train_guides(project, twin, out / "report" / "experiment", seed, epochs, progress))
        extra["adaptive"].update(extra.pop("adaptive_training"))
        training = TrainingFigures("experiment/worst_group.png", "experiment/cams.png", "experiment/index.html")
    return _finish(project, out, "crowdpatch demo", ingest, proposal, simulation, stats, extra, training)


def run_adaptive_twin(
    project: Project, directory: Path, dataset: DatasetLoad, progress: StepProgress
) -> tuple[Project, dict[str, Any]]:
    """The same images and simulated crowd under the adaptive planner.

    Returns its project and the summary's ``adaptive`` figures.
    """
    config = project.config.model_copy(deep=True)
    config.name = f"{config.name}-adaptive"
    config.crowd.planner = "adaptive"
    config.db_url = None
    twin, _ = open_or_create_project(directory, config, dataset, progress, "adaptive planner")
    _, _, stats = run_pipeline(twin, progress, label="adaptive planner")
    summary = summarize(twin, stats)
    return twin, {
        "answers_per_image": summary["answers_per_image"],
        "modeled_seconds_per_image": summary["modeled_seconds_per_image"]["patch"],
        "mask_iou": summary["mask_iou"]["patch"],
        "speedup_vs_polygon": summary["speedup_vs_polygon"],
    }


GUIDE_NAMES = {"none": "no mask", "patch": "fixed planner's masks", "gt": "ground-truth masks"}
ADAPTIVE_GUIDE = "patch (adaptive)"


def train_or_reuse(
    config: TrainConfig, splits: Callable[[], dict], runs_dir: Path, progress: StepProgress, label: str
) -> tuple[dict, dict]:
    """One training run's record and weights.

    Read from ``runs_dir/<run>/`` when a run with this exact config is stored there, else trained and stored there.
    """
    import torch

    from crowdpatch.train.runner import result_record, run_name, write_run
    from crowdpatch.train.trainer import fit

    directory = runs_dir / run_name(config)
    metrics, weights = directory / "metrics.json", directory / "model.pt"
    if metrics.is_file() and weights.is_file():
        record = json.loads(metrics.read_text(encoding="utf-8"))
        if record.get("config") == config.to_dict():
            with progress.step(f"{label}: stored run reused", 1) as advance:
                advance(1)
            return record, torch.load(weights, map_location="cpu", weights_only=True)
    loaded = splits()
    with progress.step(label, config.epochs) as advance:
        trained = fit(config, loaded, lambda epoch, record: advance(1))
    write_run(directory, trained)
    return result_record(trained), trained.state_dict


def cpu_training_threads(default: int) -> int:
    """Intra-op threads for the demo's training on a CPU: one when other processes already keep every core busy.

    PyTorch's parallel kernels wait for all their threads at every operation; on busy cores those
    waits dominate, so the demo's small CNN trains faster with one thread than with several, while on
    idle cores more threads are faster.
    """
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] >= cores else default


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_guides(
    project: Project, twin: Project, out: Path, seed: int, epochs: int, progress: StepProgress
) -> dict[str, Any]:
    """One classifier per demo guide and one on the adaptive planner's masks; the summary keys `accuracy`,
    `attention_energy_in_mask`, `training` and `adaptive_training` (what goes under `adaptive`), and the
    experiment's figures in ``out``."""
    from crowdpatch.train.data import load_splits
    from crowdpatch.train.experiment import ExperimentResult, summarize_runs, write_experiment
    from crowdpatch.train.trainer import TrainConfig

    base = TrainConfig(epochs=epochs, seed=seed, image_size=64, batch_size=DEMO_BATCH_SIZE)
    experiment = ExperimentResult()
    plan = [(project, guide, GUIDE_NAMES[guide]) for guide in DEMO_GUIDES] + [
        (twin, "patch", "adaptive planner's masks")
    ]
    adaptive_record = None
    for number, (source, guide, name) in enumerate(plan, start=1):
        config = TrainConfig(**{**base.to_dict(), "guide": guide})
        label = f"training {number}/{len(plan)}: {name}"
        record, weights = train_or_reuse(
            config,
            lambda source=source, guide=guide: load_splits(source, guide, base.image_size),
            source.path("runs"),
            progress,
            label,
        )
        if source is twin:
            adaptive_record = record
            experiment.models[ADAPTIVE_GUIDE] = weights
        else:
            experiment.runs.append(record)
            experiment.models[guide] = weights
    experiment.table = summarize_runs(experiment.runs)
    experiment.table[ADAPTIVE_GUIDE] = summarize_runs([adaptive_record])["patch"]
    first = load_splits(project, DEMO_GUIDES[0], base.image_size)
    write_experiment(experiment, first["test"], first["train"], base, out, [])
    tests = {run["config"]["guide"]: run["test"] for run in experiment.runs}
    return {
        "accuracy": {g: {"mean": t["accuracy"], "worst_group": t["worst_group"]} for g, t in tests.items()},
        "attention_energy_in_mask": {g: t["energy_in_mask"] for g, t in tests.items()},
        "training": {
            "model": base.model,
            "loss": base.loss,
            "epochs": epochs,
            "batch_size": base.batch_size,
            "image_size": base.image_size,
            "report": str(out / "index.html"),
        },
        "adaptive_training": {
            "accuracy": {
                "mean": adaptive_record["test"]["accuracy"],
                "worst_group": adaptive_record["test"]["worst_group"],
            },
            "attention_energy_in_mask": adaptive_record["test"]["energy_in_mask"],
        },
    }


def run_bench_masks(
    images: Path,
    masks: Path,
    out: Path,
    config: ProjectConfig,
    progress: StepProgress,
    limit: int | None = None,
    name: str | None = None,
) -> RunResult:
    """The simulated pipeline on a folder of real images with GT masks."""
    dataset = load_folder_dataset(images, None, masks)
    missing = [r for r in dataset.records if r.mask_path is None]
    records = [r for r in dataset.records if r.mask_path is not None][: limit or None]
    dataset = DatasetLoad(records, dataset.problems)
    config.images_dir, config.masks_dir = str(images), str(masks)
    project, ingest = create_project(Path(out) / "project", config, dataset, progress)
    ingest.problems.extend(_no_mask(r) for r in missing)
    proposal, simulation, stats = run_pipeline(project, progress)
    return _finish(
        project,
        Path(out),
        f"bench-masks: {images}",
        ingest,
        proposal,
        simulation,
        stats,
        {"dataset": name or Path(images).name},
    )


def _no_mask(record) -> InputProblem:
    return InputProblem(str(record.path), "no ground-truth mask with the same stem; skipped")
