"""`crowdpatch train` and `crowdpatch experiment` (also `python -m crowdpatch.train` for torchrun)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)
out = Console()
LOSS_NAMES = ("bgswap", "erodeswap", "cam", "camfar", "gradcam", "rrr")
"""The registered losses (crowdpatch.train.losses), listed here so `--help` does not import PyTorch."""
LOSS_HELP = f"Attention loss: none, {', '.join(LOSS_NAMES)}; combine with '+', e.g. bgswap+cam."


@contextmanager
def reported_errors() -> Iterator[None]:
    """Errors a user can fix (bad option, missing file, not a project) become one red line and exit 1."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1)


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _splits(project_dir: Optional[Path], tensors: Optional[Path], guide: str, size: int):
    from crowdpatch.train.tensors import load_splits_file

    if tensors is not None:
        if not tensors.is_file():
            raise typer.BadParameter(f"{tensors}: no such file", param_hint="--tensors")
        return load_splits_file(tensors)
    if project_dir is None:
        raise typer.BadParameter("give a PROJECT directory or --tensors FILE")
    from crowdpatch.project import Project
    from crowdpatch.train.data import load_splits

    return load_splits(Project.open(project_dir), guide, size)


def train(
    project_dir: Annotated[
        Optional[Path], typer.Argument(help="Project directory (or use --tensors).", show_default=False)
    ] = None,
    guide: Annotated[
        str, typer.Option(help="Attention masks from: none (plain training), saliency, patch (the crowd), gt.")
    ] = "patch",
    loss: Annotated[str, typer.Option(help=LOSS_HELP)] = "bgswap+cam",
    weight: Annotated[float, typer.Option("--lambda", help="Weight of each penalty term.")] = 1.0,
    model: Annotated[str, typer.Option(help="smallcnn, resnet18, resnet34 or resnet50 (random init).")] = "smallcnn",
    weights: Annotated[
        Optional[Path],
        typer.Option(help="Local checkpoint to start from (torchvision or ours); nothing is downloaded."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Batch size (per process under torchrun).")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    image_size: Annotated[int, typer.Option(help="Images are resized to this square side.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for initialization, batches and augmentation.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (bf16 mixed precision on CUDA).")] = "auto",
    tensors: Annotated[
        Optional[Path], typer.Option(help="Train from a file written by --export-tensors instead of a project.")
    ] = None,
    export_tensors: Annotated[
        Optional[Path], typer.Option(help="Only write the project's splits (with this guide) to FILE and stop.")
    ] = None,
    runs: Annotated[Optional[Path], typer.Option(help="Where runs are written (default: PROJECT/runs).")] = None,
) -> None:
    """Train a classifier guided by attention masks; report accuracy, worst-group accuracy and attention quality."""
    from crowdpatch.train.runner import run_name, train_and_save
    from crowdpatch.train.tensors import save_splits
    from crowdpatch.train.trainer import TrainConfig

    with reported_errors():
        splits = _splits(project_dir, tensors, guide, image_size)
    if export_tensors is not None:
        save_splits(splits, export_tensors)
        out.print(f"wrote {export_tensors}")
        return
    config = TrainConfig(
        guide=guide,
        loss=loss,
        weight=weight,
        model=model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        image_size=image_size,
        seed=seed,
        device=device,
        weights=str(weights) if weights else None,
    )
    runs_dir = runs or ((project_dir / "runs") if project_dir else Path("runs"))
    columns = [
        TextColumn("training {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    with reported_errors(), Progress(*columns, console=console, disable=not _is_main_rank()) as progress:
        task = progress.add_task(run_name(config), total=epochs, status="")
        result = train_and_save(
            config,
            splits,
            runs_dir,
            lambda epoch, record: progress.update(
                task, completed=epoch, status=f"val worst-group {record['val_worst_group']:.3f}"
            ),
        )
    if result is None:
        return
    test = result.test
    out.print(
        f"{run_name(config)}: best epoch {result.best_epoch}; test accuracy {test['accuracy']:.3f}, "
        f"worst group {test['worst_group']:.3f}, CAM energy in mask {test['energy_in_mask']:.3f} "
        f"({result.device}, {result.seconds:.0f} s)"
    )
    out.print(f"run written to {runs_dir / run_name(config)}")


def experiment(
    project_dir: Annotated[
        Optional[Path],
        typer.Argument(help="Project directory (with patch masks for the 'patch' guide).", show_default=False),
    ] = None,
    guides: Annotated[str, typer.Option(help="Comma-separated guides to compare.")] = "none,saliency,patch,gt",
    seeds: Annotated[int, typer.Option(help="Seeds per guide.")] = 3,
    loss: Annotated[str, typer.Option(help=LOSS_HELP)] = "bgswap+cam",
    weight: Annotated[float, typer.Option("--lambda", help="Weight of each penalty term.")] = 1.0,
    model: Annotated[str, typer.Option(help="smallcnn, resnet18, resnet34 or resnet50.")] = "smallcnn",
    epochs: Annotated[int, typer.Option(help="Training epochs per run.")] = 30,
    image_size: Annotated[int, typer.Option(help="Square side images are resized to.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", help="Output folder (default: PROJECT/report/experiment).")
    ] = None,
    tensors: Annotated[
        Optional[Path], typer.Option(help="Run from a file written by --export-tensors instead of a project.")
    ] = None,
    export_tensors: Annotated[
        Optional[Path], typer.Option(help="Only write every guide's splits to FILE (for a GPU machine) and stop.")
    ] = None,
    patch_from: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Also train with another project's crowd masks over the same images, as guide patch-LABEL: "
            "LABEL=PROJECT_DIR (repeatable; e.g. fixed=horses-fixed to compare planners).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Compare guides over seeds (model chosen on validation worst-group accuracy); writes a table, plots and CAMs."""
    from crowdpatch.train.experiment import markdown_table, run_experiment, write_experiment
    from crowdpatch.train.tensors import load_experiment_tensors, save_experiment_tensors
    from crowdpatch.train.trainer import TrainConfig

    names = [g.strip() for g in guides.split(",") if g.strip()]
    if tensors is not None:
        splits_by_guide = {g: s for g, s in load_experiment_tensors(tensors).items() if g in names}
        default_out = Path("experiment")
    elif project_dir is not None:
        from crowdpatch.project import Project
        from crowdpatch.train.data import load_splits

        with reported_errors():
            project = Project.open(project_dir)
            splits_by_guide = {g: load_splits(project, g, image_size) for g in names}
            splits_by_guide.update(other_projects_masks(project_dir, patch_from or [], splits_by_guide, image_size))
        default_out = project.path("report", "experiment")
    else:
        raise typer.BadParameter("give a PROJECT directory or --tensors FILE")
    if not splits_by_guide:
        console.print(f"[bold red]error:[/] none of the guides {names} is in {tensors}")
        raise typer.Exit(1)
    if export_tensors is not None:
        save_experiment_tensors(splits_by_guide, export_tensors)
        out.print(f"wrote {export_tensors}")
        return
    base = TrainConfig(loss=loss, weight=weight, model=model, epochs=epochs, image_size=image_size, device=device)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("experiment", total=len(splits_by_guide) * seeds)
        with reported_errors():
            result = run_experiment(
                splits_by_guide,
                base,
                list(range(seeds)),
                lambda message: (progress.advance(task), progress.console.print(message)),
            )
    first = next(iter(splits_by_guide.values()))
    page = write_experiment(result, first.get("test") or first["val"], first["train"], base, out_dir or default_out, [])
    out.print(markdown_table(result.table))
    out.print(f"report: {page}")


def other_projects_masks(project_dir: Path, specs: list[str], splits_by_guide: dict, image_size: int) -> dict:
    """Guide ``patch-LABEL`` per ``LABEL=PROJECT_DIR``: this project's splits with that project's crowd masks."""
    from crowdpatch.project import Project
    from crowdpatch.train.data import load_splits, with_masks_of

    guides = {}
    base = next(iter(splits_by_guide.values()), None)
    for spec in specs:
        label, sep, other_dir = spec.partition("=")
        if not sep or not label.strip() or not other_dir.strip():
            raise ValueError(f"--patch-from {spec!r}: expected LABEL=PROJECT_DIR, e.g. fixed=horses-fixed")
        if Path(other_dir).resolve() == Path(project_dir).resolve():
            raise ValueError(f"--patch-from {spec!r}: that is this project; its masks are the guide 'patch'")
        other = load_splits(Project.open(Path(other_dir)), "patch", image_size)
        if base is None:
            raise ValueError("--patch-from needs at least one guide in --guides (its splits are the ones trained on)")
        guides[f"patch-{label.strip()}"] = with_masks_of(base, other)
    return guides


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(experiment)
