"""`crowdpatch build-split celeba|coco|waterbirds` and `crowdpatch label-studio import|export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crowdpatch.datasets.folder import DatasetError

build_split_app = typer.Typer(
    help="Write a biased labels CSV (OUT/labels.csv, + OUT/masks/ for COCO) from a public dataset's own files, "
    "for `crowdpatch init --images DIR --labels OUT/labels.csv`. Train carries the shortcut at --correlation "
    "(symmetric: that fraction of positives has the bias attribute and of negatives lacks it); "
    "val and test are balanced over the four (label, bias) groups.",
    no_args_is_help=True,
)
label_studio_app = typer.Typer(
    help="Label Studio interop: import an exported project's brush and polygon annotations as ground-truth "
    "masks, or export crowdpatch masks as brush pre-annotations.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option(help="Folder to write labels.csv (and masks/) into.")]
Seed = Annotated[int, typer.Option(help="Seed of the sampling; the same seed gives the same split.")]
Correlation = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Training rate at which the label co-occurs with the bias attribute.")
]


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def _finish(rows, out: Path, images: Path, group: str, masks: Path | None = None) -> None:
    from crowdpatch.datasets.bias_splits import group_counts, missing_images, write_labels_csv

    labels = write_labels_csv(out / "labels.csv", rows)
    typer.echo(f"wrote {labels} ({len(rows)} images)")
    for (split, label, value), n in group_counts(rows, group).items():
        typer.echo(f"  {split:5s} {label} / {group}={value}: {n}")
    missing = missing_images(images, rows)
    if missing:
        typer.echo(f"warning: {len(missing)} listed image(s) are not under {images} (first: {missing[0]})", err=True)
    masks_option = f" --masks {masks}" if masks else ""
    typer.echo(f"next: crowdpatch init PROJECT --images {images} --labels {labels}{masks_option}")


@build_split_app.command("celeba")
def celeba_command(
    root: Annotated[
        Path,
        typer.Argument(
            help="CelebA folder holding list_attr_celeba.txt, list_eval_partition.txt and img_align_celeba/."
        ),
    ],
    out: Out,
    target: Annotated[str, typer.Option(help="Attribute to classify (e.g. Mustache).")] = "Mustache",
    bias: Annotated[str, typer.Option(help="Attribute it co-occurs with in train (e.g. Male).")] = "Male",
    correlation: Correlation = 0.95,
    seed: Seed = 0,
    max_train_per_class: Annotated[Optional[int], typer.Option(help="Cap on training images per label.")] = None,
    max_eval_per_group: Annotated[
        Optional[int], typer.Option(help="Cap on val/test images per (label, bias) group.")
    ] = None,
) -> None:
    """CelebA: train from partition 0 at --correlation; val (1) and test (2) balanced over (target, bias)."""
    from crowdpatch.datasets.bias_splits import build_celeba

    try:
        rows = build_celeba(
            root / "list_attr_celeba.txt",
            root / "list_eval_partition.txt",
            target,
            bias,
            correlation,
            seed,
            max_train_per_class,
            max_eval_per_group,
        )
    except DatasetError as exc:
        _fail(exc)
    _finish(rows, out, root / "img_align_celeba", bias)


@build_split_app.command("coco")
def coco_command(
    instances: Annotated[Path, typer.Argument(help="COCO instances JSON (e.g. annotations/instances_train2017.json).")],
    images: Annotated[Path, typer.Option(help="Folder of the JSON's images (e.g. train2017/).")],
    out: Out,
    target: Annotated[str, typer.Option(help="Category to classify (present = positive).")] = "sports ball",
    context: Annotated[str, typer.Option(help="Category it co-occurs with in train.")] = "person",
    correlation: Correlation = 0.95,
    seed: Seed = 0,
    val_fraction: Annotated[
        float, typer.Option(help="Share of the smallest (target, context) group put in val, from each group.")
    ] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="The same for test.")] = 0.15,
    max_train_per_class: Annotated[Optional[int], typer.Option(help="Cap on training images per label.")] = None,
) -> None:
    """COCO: images with the target are positives; writes its masks (union of instances, 0/255 PNG) to OUT/masks/."""
    from crowdpatch.datasets.bias_splits import build_coco, load_coco, write_coco_masks

    try:
        coco = load_coco(instances)
        rows = build_coco(coco, target, context, correlation, seed, val_fraction, test_fraction, max_train_per_class)
    except (DatasetError, ValueError) as exc:
        _fail(exc)
    written = write_coco_masks(coco, rows, target, out / "masks")
    typer.echo(f"wrote {written} masks of {target!r} to {out / 'masks'}")
    _finish(rows, out, images, context, out / "masks")


@build_split_app.command("waterbirds")
def waterbirds_command(
    root: Annotated[Path, typer.Argument(help="Waterbirds folder holding metadata.csv and the image subfolders.")],
    out: Out,
) -> None:
    """Waterbirds: labels landbird/waterbird, group column place (land/water), the dataset's own splits."""
    from crowdpatch.datasets.bias_splits import build_waterbirds

    try:
        rows = build_waterbirds(root / "metadata.csv")
    except DatasetError as exc:
        _fail(exc)
    _finish(rows, out, root, "place")


@label_studio_app.command("import")
def label_studio_import_command(
    export: Annotated[Path, typer.Argument(help="Label Studio JSON export (a list of tasks with annotations).")],
    out: Annotated[Path, typer.Option(help="Masks folder to write (one 0/255 PNG per image stem).")],
) -> None:
    """Brush and polygon annotations -> GT masks (for `init --masks`, or as polygon-guide masks)."""
    from crowdpatch.datasets.label_studio import import_masks

    try:
        written, problems = import_masks(export, out)
    except (DatasetError, ImportError) as exc:
        _fail(exc)
    for problem in problems:
        typer.echo(f"skipped {problem}", err=True)
    typer.echo(f"wrote {len(written)} masks to {out}")


@label_studio_app.command("export")
def label_studio_export_command(
    masks: Annotated[Path, typer.Argument(help="Folder of binary mask PNGs (crowdpatch masks, 0/255).")],
    images_url_prefix: Annotated[
        str,
        typer.Option(help="URL the images are served under; the task's image is PREFIX + mask stem + --image-suffix."),
    ],
    out: Annotated[Path, typer.Option(help="Tasks JSON to write (import it in Label Studio).")],
    image_suffix: Annotated[str, typer.Option(help="Image file extension appended to each mask stem.")] = ".jpg",
    label: Annotated[str, typer.Option(help="Brush label name (a <Label> of the project's <BrushLabels>).")] = "object",
    from_name: Annotated[str, typer.Option(help="Name of the <BrushLabels> tag.")] = "tag",
    to_name: Annotated[str, typer.Option(help="Name of the <Image> tag.")] = "image",
) -> None:
    """Binary masks -> Label Studio tasks with brush `predictions` (pre-annotations)."""
    from crowdpatch.datasets.label_studio import export_tasks

    try:
        count = export_tasks(masks, images_url_prefix, out, image_suffix, label, from_name, to_name)
    except (DatasetError, ImportError) as exc:
        _fail(exc)
    typer.echo(f"wrote {count} tasks to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(build_split_app, name="build-split")
    app.add_typer(label_studio_app, name="label-studio")
