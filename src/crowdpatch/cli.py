"""The `crowdpatch` command: a thin layer over the library (every step is a function elsewhere)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Iterator, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from crowdpatch.config import CONFIG_FILENAME, ConfigError, ProjectConfig
from crowdpatch.datasets import (
    CutoutSource,
    DatasetError,
    InputProblem,
    builtin_spec,
    generate_benchmark,
    load_folder_dataset,
)
from crowdpatch.project import Project, ProjectError
from crowdpatch.simulate.run import SimulationError
from crowdpatch.store.health import storage_error_message

EXIT_ERROR = 1
EXIT_INPUT_PROBLEMS = 3
"""The step finished, but some inputs (files, CSV lines) were skipped: see the messages."""

app = typer.Typer(
    help="crowdpatch: human attention masks from crowdsourced patch labels, on your images or the built-in benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()


class PlannerName(str, Enum):
    fixed = "fixed"
    adaptive = "adaptive"
    precise = "precise"


DEFAULT_PLANNER = PlannerName.precise
"""The best planner that needs no downloaded file, by the measurements in docs/benchmarks.md ("Mask quality")."""

PlannerOption = Annotated[
    PlannerName,
    typer.Option(
        help="precise: the target's four ends, then a pick among masks drawn from them and clicks on their errors. "
        "fixed: the paper's questions, fixed redundancy. "
        "adaptive: ask only what is expected to change the mask (saliency prior, outline check, follow-ups)."
    ),
]
BudgetOption = Annotated[Optional[float], typer.Option(help="Adaptive planner: most human seconds spent per image.")]
SaliencyOption = Annotated[
    str,
    typer.Option(help="Saliency backend: spectral, finegrained, gt, csnet or onnx (the last two need --weights)."),
]
WeightsOption = Annotated[
    Optional[Path], typer.Option(help="Model file for a saliency backend that needs one (csnet, onnx).")
]


class Presentation(str, Enum):
    single = "single"
    grid = "grid"


PresentationOption = Annotated[
    Presentation, typer.Option(help="grid: one screen of cells per region; single: one window per question.")
]


class Method(str, Enum):
    ds = "ds"
    mv = "mv"
    glad = "glad"


class ExportFormat(str, Enum):
    png = "png"
    npy = "npy"
    coco = "coco"


class RichProgress:
    """One progress bar per step; indeterminate (a counter) when the total is unknown."""

    @contextmanager
    def step(self, name: str, total: int | None) -> Iterator[Callable[..., None]]:
        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(name, total=total)
            yield lambda n=1, *_: progress.advance(task, n)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def storage_errors(directory: Path) -> Iterator[None]:
    """Turn a full disk, a read-only folder or a path in the way into one clear line and exit code 1.

    Every step commits its rows only after the files they point to are written, so what was
    stored before the failure stays valid and the same command resumes once the cause is fixed.
    The message says so, instead of a traceback that would suggest the project is damaged.
    """
    try:
        yield
    except (OSError, DBAPIError) as exc:
        fail(
            f"project {directory}: {storage_error_message(exc)}; what was stored before is kept, "
            "fix this and run the command again"
        )


def report_problems(problems: list, what: str) -> int:
    """Print skipped inputs; the exit code tells a script that something was skipped."""
    if not problems:
        return 0
    console.print(f"[yellow]{len(problems)} {what} skipped:[/]")
    for problem in problems[:50]:
        console.print(f"  [yellow]-[/] {problem}")
    if len(problems) > 50:
        console.print(f"  ... and {len(problems) - 50} more")
    return EXIT_INPUT_PROBLEMS


def parse_cutout(text: str) -> CutoutSource:
    """'horse=photos/:masks/' -> a cut-out class."""
    label, sep, dirs = text.partition("=")
    images_dir, sep2, masks_dir = dirs.partition(":")
    if not (sep and sep2 and label and images_dir and masks_dir):
        raise ValueError(f"--cutouts {text!r}: expected LABEL=IMAGES_DIR:MASKS_DIR")
    return CutoutSource(label, Path(images_dir), Path(masks_dir))


def apply_planner(config: ProjectConfig, planner: "PlannerName", budget_seconds: float | None) -> None:
    if budget_seconds is not None and budget_seconds <= 0:
        fail("--budget-seconds must be positive")
    if budget_seconds is not None and planner.value != "adaptive":
        fail("--budget-seconds needs --planner adaptive (the fixed planner asks every question it plans)")
    config.crowd.planner = planner.value
    config.adaptive.budget_seconds = budget_seconds


def propose_line(report) -> str:
    """What step 1 asked: clusters to verify, or the questions asked of whole images, and gold."""
    parts = [f"{report.clusters} clusters to verify"] if report.clusters or not report.whole_image else []
    if report.first_questions:
        asked = ", ".join(f"{count} {kind}" for kind, count in sorted(report.first_questions.items()))
        parts.append(f"{report.whole_image} asked whole ({asked} questions)")
    elif report.whole_image:
        parts.append(f"{report.whole_image} without a cluster (whole image)")
    return f"{report.processed} images: " + ", ".join([*parts, f"{report.gold} gold questions"])


def images_proposed(counts: dict[str, int]) -> int:
    """Images past step 1 (neither new nor in error), from :meth:`Project.counts`."""
    return sum(
        n for key, n in counts.items() if key.startswith("images_") and key not in ("images_new", "images_error")
    )


def open_project(directory: Path) -> Project:
    try:
        with storage_errors(directory):
            return Project.open(directory)
    except (ConfigError, ProjectError) as exc:
        fail(str(exc))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Project directory to create; its name is the project's name.")],
    builtin: Annotated[
        bool, typer.Option("--builtin", help="Use the built-in biased benchmark (written to DIR/data).")
    ] = False,
    images_count: Annotated[
        Optional[int],
        typer.Option(help="Images in the built-in benchmark. Default: 1500 shapes, 1600 cut-outs.", show_default=False),
    ] = None,
    image_size: Annotated[
        Optional[int],
        typer.Option(
            help="Side in pixels of built-in benchmark images. Default: 64 shapes, 128 cut-outs.", show_default=False
        ),
    ] = None,
    object_scale: Annotated[
        Optional[tuple[float, float]],
        typer.Option(
            help="Built-in benchmark: the object's (longer) side as a share of the image side, drawn between LOW HIGH. "
            "Default: 0.2 0.35 shapes, 0.35 0.6 cut-outs.",
            show_default=False,
        ),
    ] = None,
    agreement: Annotated[
        float, typer.Option(help="Share of built-in training images whose background agrees with the class.")
    ] = 0.99,
    cutouts: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Real cut-outs instead of procedural shapes, twice: LABEL=IMAGES_DIR:MASKS_DIR (one class each)."
        ),
    ] = None,
    images: Annotated[Optional[Path], typer.Option(help="Folder of images.")] = None,
    labels: Annotated[
        Optional[Path], typer.Option(help="CSV with columns path,label [,split] [,group columns...].")
    ] = None,
    masks: Annotated[
        Optional[Path],
        typer.Option(help="Folder of ground-truth masks with the images' file stems (for simulation, gold and IoU)."),
    ] = None,
    target: Annotated[
        Optional[str],
        typer.Option(
            help="What workers look for ('Find the <target>'). "
            "Default: the labels' one class (horse, or horse/not_horse); asked for when the labels do not name one."
        ),
    ] = None,
    presentation: PresentationOption = Presentation.grid,
    max_depth: Annotated[int, typer.Option(help="Deepest lattice level asked (single presentation).")] = 2,
    grid_size: Annotated[int, typer.Option(help="Cells per side of a grid screen.")] = 8,
    votes: Annotated[int, typer.Option(help="Votes wanted per question (stops at 2 when they agree).")] = 3,
    planner: PlannerOption = DEFAULT_PLANNER,
    budget_seconds: BudgetOption = None,
    saliency: SaliencyOption = "spectral",
    weights: WeightsOption = None,
    db: Annotated[Optional[str], typer.Option(help="Database URL (default: SQLite crowdpatch.db in DIR).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the benchmark, gold and simulated workers.")] = 0,
) -> None:
    """Create a project from a folder of images (+ labels CSV, + masks) or from the built-in benchmark."""
    if builtin == (images is not None):
        fail("give either --builtin or --images DIR")
    if (directory / CONFIG_FILENAME).exists():
        fail(f"{directory} is already a crowdpatch project; use it, or choose a new directory")
    if builtin:
        try:
            spec = builtin_spec(
                tuple(parse_cutout(text) for text in cutouts or ()),
                n_images=images_count,
                size=image_size,
                object_scale=object_scale,
                agreement=agreement,
                seed=seed,
            )
        except ValueError as exc:
            fail(str(exc))
        with (
            storage_errors(directory),
            RichProgress().step("generating the built-in benchmark", spec.n_images) as advance,
        ):
            labels = generate_benchmark(directory / "data", spec, advance)
        images, masks = directory / "data" / "images", directory / "data" / "masks"
    try:
        dataset = load_folder_dataset(images, labels, masks)
        target = target or ("object" if builtin else choose_target(dataset))
        config = ProjectConfig(
            name=directory.resolve().name,
            target=target,
            db_url=db,
            images_dir=str(images.resolve()),
            masks_dir=str(masks.resolve()) if masks else None,
        )
        config.patches.presentation = presentation.value
        config.patches.max_depth = max_depth
        config.patches.grid_size = grid_size
        config.crowd.votes = votes
        apply_planner(config, planner, budget_seconds)
        config.saliency.backend = saliency
        config.saliency.weights = str(weights.resolve()) if weights else None
        config.simulation.seed = seed
        from crowdpatch.workflow import create_project

        with storage_errors(directory):
            project, report = create_project(directory, config, dataset, RichProgress())
    except (DatasetError, ProjectError, ValueError) as exc:
        fail(str(exc))
    out.print(f"created project [bold]{config.name}[/] in {directory}: {report.added} images, target '{config.target}'")
    print_mask_survey(report)
    raise typer.Exit(report_problems(report.problems, "inputs"))


def choose_target(dataset) -> str:
    """The target the labels name, else the user's answer at a terminal; without a terminal, a clear error."""
    from crowdpatch.datasets import target_from_labels

    labels = {record.label for record in dataset.records}
    named = target_from_labels(labels)
    if named:
        return named
    known = sorted(label for label in labels if label)
    hint = f" (labels: {', '.join(known[:5])}{', ...' if len(known) > 5 else ''})" if known else ""
    if sys.stdin.isatty():
        answer = typer.prompt(f"What should workers look for{hint}? e.g. horse").strip()
        if answer:
            return answer
    fail(f"give --target: what workers look for, e.g. --target horse; the labels do not name one target{hint}")


def print_mask_survey(report) -> None:
    """How the ground-truth masks were read, and every warning about them, one line each."""
    survey = report.masks
    if survey.total:
        out.print(survey.description())
    for line in survey.warnings():
        console.print(f"[yellow]warning:[/] {line}")
    for path, reason in survey.unreadable:
        console.print(f"[yellow]warning:[/] mask {path}: {reason}; that image has no ground truth")
    if report.without_mask:
        names = report.without_mask
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        console.print(
            f"[yellow]warning:[/] {len(names)} images have no mask in the masks folder ({shown}): "
            "they get no IoU and no gold question"
        )


@app.command()
def propose(directory: Annotated[Path, typer.Argument(help="Project directory.")]) -> None:
    """Step 1: saliency maps and each image's first questions (extreme points with the precise planner, cluster
    verifications with the others); resumes where it stopped."""
    from crowdpatch.propose import propose as run_propose

    project = open_project(directory)
    counts = project.counts()
    todo = counts.get("images_new", 0)
    if todo == 0:
        out.print(f"nothing new to propose ({images_proposed(counts)} images already proposed)")
        return
    with storage_errors(directory), RichProgress().step("step 1: saliency", todo) as advance:
        report = run_propose(project, advance)
    out.print(propose_line(report))
    raise typer.Exit(report_problems(report.problems, "images"))


@app.command("finetune-saliency")
def finetune_saliency(directory: Annotated[Path, typer.Argument(help="Project directory.")]) -> None:
    """Fine-tune the study's CSNet on every mask the crowd has finished, and recompute the saliency maps (so the
    outline checks) of the images no worker has seen yet; later proposals use the new weights too. Run it now and
    then while a study is served (see README, 'Precise masks')."""
    from crowdpatch.learning import finetune_study

    project = open_project(directory)
    try:
        with storage_errors(directory):
            report = finetune_study(project)
    except (ValueError, ImportError) as exc:
        out.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1)
    if not report.trained_on:
        out.print("no finished mask yet: nothing to learn from")
        return
    out.print(
        f"fine-tuned on {report.trained_on} finished masks (loss {report.losses[0]:.3f} -> {report.losses[-1]:.3f}): "
        f"{report.weights}; {len(report.recomputed)} saliency maps recomputed"
    )


@app.command()
def simulate(
    directory: Annotated[Path, typer.Argument(help="Project directory.")],
    workers: Annotated[Optional[int], typer.Option(help="Simulated workers answering in parallel.")] = None,
    worker_error: Annotated[Optional[float], typer.Option(help="Mean flip rate of a worker's answers.")] = None,
    spammers: Annotated[Optional[float], typer.Option(help="Share of spammer workers.")] = None,
    max_answers: Annotated[
        Optional[int], typer.Option(help="Stop after this many answers (run again to go on).")
    ] = None,
    via: Annotated[
        Optional[list[str]],
        typer.Option(
            metavar="URL",
            help="Answer through a running server's HTTP API at this URL (rehearsal, load); repeat it to spread "
            "the workers over several servers of the study.",
        ),
    ] = None,
) -> None:
    """Answer the open questions with simulated workers (modeled times); resumable."""
    from crowdpatch.simulate.run import run_simulation

    project = open_project(directory)
    if via:
        from crowdpatch.simulate.http import simulate_via_http

        reports = simulate_via_http(via, project, workers or project.config.simulation.workers, max_answers)
        for url, result in zip(via, reports):
            out.print(
                f"{result.answers} answers acknowledged by {url} from {result.workers} workers in "
                f"{result.seconds:.1f} s ({result.stopped} stopped, {result.conflicts} refused as late)"
            )
        return
    if worker_error is not None:
        project.config.simulation.worker_error = worker_error
    if spammers is not None:
        project.config.simulation.spammers = spammers
    if workers is not None:
        project.config.simulation.workers = workers
    with storage_errors(directory):
        project.save_config()
    with storage_errors(directory), RichProgress().step("step 2: simulated answers", max_answers) as advance:
        try:
            report = run_simulation(project, workers, max_answers, lambda stored, open_: advance(1))
        except SimulationError as exc:
            fail(str(exc))
    out.print(
        f"{report.answers} answers from {report.workers} workers ({report.banned} banned); "
        f"{report.open_questions} questions still open; simulated latency {report.latency_seconds:.0f} s (modeled)"
    )


@app.command()
def masks(
    directory: Annotated[Path, typer.Argument(help="Project directory.")],
    export: Annotated[list[ExportFormat], typer.Option(help="Export formats (repeat the option): png, npy, coco.")] = [
        ExportFormat.png
    ],
    method: Annotated[Optional[Method], typer.Option(help="Aggregation: ds (Dawid-Skene), mv, glad.")] = None,
) -> None:
    """Aggregate the votes into soft and binary attention masks and export them to DIR/masks."""
    from crowdpatch.masks.build import build_masks
    from crowdpatch.summary import summarize

    project = open_project(directory)
    problems: list[InputProblem] = []
    with storage_errors(directory):
        if method is not None:
            project.config.aggregation.method = method.value
            project.save_config()
        total = images_proposed(project.counts())
        with RichProgress().step("aggregating and exporting masks", total) as advance:
            stats = build_masks(project, [f.value for f in export], advance, problems)
        summary = summarize(project, stats)
    polygons = f" and {summary['polygon_masks']} polygon masks (masks/polygon)" if summary["polygon_masks"] else ""
    out.print(f"{len(stats)} masks{polygons} written to {project.path('masks')}")
    print_outcome(summary)
    raise typer.Exit(
        report_problems(problems, "IoU scores (ground-truth or saliency file unreadable; the masks are written)")
    )


@app.command()
def status(directory: Annotated[Path, typer.Argument(help="Project directory.")]) -> None:
    """Images per stage, questions open and done, answers so far."""
    project = open_project(directory)
    table = Table(title=f"project {project.config.name}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in project.counts().items():
        table.add_row(key, str(value))
    out.print(table)


WORKER_COLUMNS = {
    "gold_seen": "gold",
    "gold_accuracy": "gold acc",
    "agreement": "agree",
    "yes_rate": "yes",
    "median_seconds": "median s",
    "too_fast": "fast",
    "stopped_reason": "stopped by",
}


@app.command()
def workers(
    directory: Annotated[Path, typer.Argument(help="Project directory.")],
    csv: Annotated[
        Optional[Path],
        typer.Option(help="Also write the table to this CSV file (text that would run as a formula is quoted)."),
    ] = None,
) -> None:
    """The worker-quality table: answers, gold accuracy, agreement with the aggregate, speed, bans."""
    from crowdpatch.aggregate import worker_quality
    from crowdpatch.csv_export import write_frame
    from crowdpatch.masks.build import MaskBuilder

    project = open_project(directory)
    consensus = MaskBuilder(project).posteriors
    with project.sessions() as session:
        frame = worker_quality(session, project.id, consensus)
    if frame.empty:
        out.print("no worker has answered yet")
        return
    table = Table(
        title=f"workers of {project.config.name} (agreement: with the {project.config.aggregation.method} aggregate)"
    )
    shown = frame.drop(columns=["platform", "worker_row"]).rename(columns=WORKER_COLUMNS)
    for column in shown.columns:
        table.add_column(column, justify="left" if column == "worker" else "right")
    for row in shown.sort_values("answers", ascending=False).itertuples(index=False):
        table.add_row(*(_fmt(value) if not isinstance(value, str) else value for value in row))
    out.print(table)
    if csv is not None:
        write_frame(frame, csv)
        out.print(f"written to {csv}")


@app.command()
def report(
    directory: Annotated[
        Optional[Path], typer.Argument(help="Project directory (writes DIR/report and DIR/summary.json).")
    ] = None,
    curves: Annotated[
        Optional[list[Path]],
        typer.Option(
            help="Run folders (bench-masks / demo --out) or summary.json files: "
            "plot human-seconds per image against mask IoU, one curve per planner, with the polygon reference. "
            "Repeat for every run."
        ),
    ] = None,
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", help="Where --curves writes curves.png and curves.md.")
    ] = None,
) -> None:
    """Write a project's report and summary, or (--curves) the cost curves of several runs on one figure."""
    if curves:
        from crowdpatch.config import TimeModel
        from crowdpatch.report.curves import curves_table, load_points, plot_curves

        try:
            points = load_points(curves)
        except ValueError as exc:
            fail(str(exc))
        if not points:
            fail("none of the runs has a mask IoU (runs need ground-truth masks)")
        target = out_dir or Path(".")
        polygon = TimeModel().polygon
        figure = plot_curves(points, polygon, target / "curves.png")
        table = curves_table(points, polygon)
        (target / "curves.md").write_text(table + "\n", encoding="utf-8")
        out.print(table)
        out.print(f"figure: {figure}\ntable:  {target / 'curves.md'}")
        return
    if directory is None:
        fail("give a project directory, or --curves RUN ... for cost curves")
    from crowdpatch.masks.build import build_masks
    from crowdpatch.summary import summarize
    from crowdpatch.workflow import write_outputs

    project = open_project(directory)
    problems: list[InputProblem] = []
    with storage_errors(directory):
        stats = build_masks(project, (), problems=problems)
        summary = summarize(project, stats)
        summary_path, report_path = write_outputs(
            project, project.directory, f"crowdpatch: {project.config.name}", summary, stats, []
        )
    print_outcome(summary)
    out.print(f"report: {report_path}\nsummary: {summary_path}")
    raise typer.Exit(report_problems(problems, "IoU scores (ground-truth or saliency file unreadable)"))


@app.command()
def demo(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output directory (data, project, summary.json, report/). Run again with the same options to resume.",
        ),
    ] = Path("demo-out"),
    quick: Annotated[bool, typer.Option("--quick", help="24 small images, no training: under a minute.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for the benchmark and the simulated crowd.")] = 0,
    images: Annotated[Optional[int], typer.Option(help="Override the number of benchmark images.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete a previous demo in --out and start over.")] = False,
) -> None:
    """The whole method on the built-in biased benchmark with a simulated crowd, on SQLite; resumes a previous run."""
    from crowdpatch.workflow import DemoError, run_demo

    try:
        with storage_errors(out_dir):
            result = run_demo(out_dir, quick, seed, RichProgress(), images, fresh=fresh)
    except DemoError as exc:
        fail(str(exc))
    print_outcome(result.summary)
    out.print(f"summary: {result.summary_path}\nreport:  {result.report_path}")
    raise typer.Exit(report_problems(result.problems, "inputs"))


@app.command("bench-masks")
def bench_masks(
    images: Annotated[Path, typer.Option(help="Folder of images.")],
    masks: Annotated[
        Path, typer.Option(help="Folder of GT masks with the same stems (may be smaller than the images).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")],
    presentation: PresentationOption = Presentation.grid,
    saliency: SaliencyOption = "spectral",
    weights: WeightsOption = None,
    worker_error: Annotated[float, typer.Option()] = 0.1,
    spammers: Annotated[float, typer.Option()] = 0.1,
    votes: Annotated[int, typer.Option()] = 3,
    planner: PlannerOption = DEFAULT_PLANNER,
    budget_seconds: BudgetOption = None,
    name: Annotated[
        Optional[str],
        typer.Option(help="Dataset name in summary.json and cost curves (default: the images folder's name)."),
    ] = None,
    max_depth: Annotated[int, typer.Option()] = 2,
    grid_size: Annotated[int, typer.Option()] = 8,
    workers: Annotated[int, typer.Option(help="Simulated workers.")] = 20,
    method: Annotated[Method, typer.Option()] = Method.ds,
    proposer: Annotated[
        str, typer.Option(help="Regions to verify: 'clusters' of the saliency map or 'bing' objectness boxes.")
    ] = "clusters",
    proposer_model: Annotated[
        Optional[Path], typer.Option(help="Folder of the BING model files (for --proposer bing).")
    ] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the simulated pipeline on real images with GT masks; writes OUT/summary.json and a report."""
    from crowdpatch.workflow import run_bench_masks

    config = ProjectConfig(name="bench", target="object")
    config.patches.presentation = presentation.value
    config.patches.max_depth = max_depth
    config.patches.grid_size = grid_size
    config.saliency.backend = saliency
    config.saliency.weights = str(weights) if weights else None
    config.crowd.votes = votes
    apply_planner(config, planner, budget_seconds)
    config.aggregation.method = method.value
    try:
        config.saliency.proposer = proposer
    except ValueError:
        fail(f"--proposer {proposer!r}: choose clusters or bing")
    config.saliency.proposer_model = str(proposer_model) if proposer_model else None
    config.simulation.worker_error = worker_error
    config.simulation.spammers = spammers
    config.simulation.workers = workers
    config.simulation.seed = seed
    if (out_dir / "project").exists():
        fail(f"{out_dir} already holds a run; choose another --out or remove it")
    try:
        with storage_errors(out_dir):
            result = run_bench_masks(images, masks, out_dir, config, RichProgress(), limit, name)
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    print_mask_survey(result.ingest)
    print_outcome(result.summary)
    out.print(f"summary: {result.summary_path}\nreport:  {result.report_path}")
    raise typer.Exit(report_problems(result.problems, "inputs"))


def print_outcome(summary: dict) -> None:
    """A run's result at a glance.

    One row per way of getting a mask, then the headline sentence (the report's first line).
    """
    from crowdpatch.report.overview import overview_table
    from crowdpatch.summary import headline

    columns, rows = overview_table(summary)
    if rows:
        table = Table(title=f"times are {summary.get('times_are', 'modeled')}; every figure is in summary.json")
        for index, column in enumerate(columns):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        out.print(table)
    out.print(headline(summary), soft_wrap=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.3f}"
    return json.dumps(value) if not isinstance(value, str) else value


def _register_extensions() -> None:
    """Commands that live with their stage: training (PyTorch) and serving (FastAPI), imported lazily."""
    from crowdpatch.datasets.commands import register as register_datasets
    from crowdpatch.saliency.commands import register as register_saliency
    from crowdpatch.server.commands import register as register_server
    from crowdpatch.train.commands import register as register_training

    register_training(app)
    register_server(app)
    register_saliency(app)
    register_datasets(app)


_register_extensions()


def main() -> None:  # pragma: no cover - console entry for `python -m crowdpatch`
    app(prog_name="crowdpatch")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
