"""The HTML report: one self-contained page (no JavaScript, no external resources) that says what
a run achieved, then shows why: the headline sentence, the figures at a glance, cost against mask
IoU, the training results, the best, median and worst images, and the raw summary at the bottom."""

from __future__ import annotations

import html
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from crowdpatch.report.curves import plot_curves, summary_points
from crowdpatch.report.figures import GT_IGNORE, SampleFigure, panel_size, render_sample
from crowdpatch.report.overview import COLUMNS, overview_table
from crowdpatch.report.selection import UNSCORED
from crowdpatch.summary import headline

TIMES_ARE = ("modeled", "measured", "mixed")
FIGURES_DIR = "figures"
COST_FIGURE = "cost.png"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px; padding: 0 16px; \
color: #222; line-height: 1.4; }
h1, li { overflow-wrap: anywhere; }
.headline { font-size: 1.25em; font-weight: 600; margin: 0.5em 0 0.8em; }
.times { padding: 0.4em 0.8em; background: #fff4d6; display: inline-block; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.3em; }
.sample { margin: 1.5em 0 2em; }
.sample h4 { margin: 0 0 0.4em; font-weight: 600; overflow-wrap: anywhere; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 340px), 1fr)); gap: 10px; }
.panels figure { margin: 0; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
details { margin: 2em 0; }
@media (max-width: 600px) {
  .headline { font-size: 1.05em; } h1 { font-size: 1.6em; }
  table { font-size: 0.85em; } th, td { padding: 0.2em 0.35em; }
}
summary { cursor: pointer; font-weight: 600; }
"""

PANEL_CAPTIONS = {
    "asked": "(a) photo: verified regions (cyan) and the {windows} questions asked, green = yes, red = no",
    "mask": "(b) final mask (as written to masks/soft): bright inside, magenta outline; ground truth dashed yellow",
    "truth": "(c) ground truth: bright inside, yellow outline",
}


PRECISE_ASKED_CAPTION = (
    "(a) photo: the extreme points clicked (cyan dots) and {clicks} clicks on the chosen outline's errors (magenta x)"
)


@dataclass(frozen=True)
class TrainingFigures:
    """The training section's images and the experiment's own page, as paths relative to the report page."""

    bar_chart: str | None = None
    cams: str | None = None
    page: str | None = None


def format_value(value: object) -> str:
    """A summary value as shown in the table: floats to 3 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return _three_significant(float(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _three_significant(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:.3g}"
    rounded = float(f"{x:.2e}")  # rounding first, so 99.96 -> 100 has the exponent of 100
    exponent = math.floor(math.log10(abs(rounded)))
    if not -3 <= exponent < 6:
        return f"{x:.3g}"
    # Positional rather than %g's "1.23e+03": seconds and counts read better as 1230.
    return f"{rounded:.{max(0, 2 - exponent)}f}"


def flatten_summary(summary: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    """Rows ``(dotted key, formatted value)``; nested dicts become ``outer.inner`` keys."""
    rows: list[tuple[str, str]] = []
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(flatten_summary(value, prefix=f"{name}."))
        else:
            rows.append((name, format_value(value)))
    return rows


def figure_stems(names: Sequence[str]) -> list[str]:
    """A safe, unique file-name stem per sample name (names may hold any characters)."""
    used: set[str] = set()
    stems = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sample"
        candidate, n = stem, 1
        while candidate.lower() in used:  # case-insensitive file systems
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate.lower())
        stems.append(candidate)
    return stems


def _times_line(summary: Mapping) -> str:
    times_are = summary.get("times_are")
    if times_are not in TIMES_ARE:
        raise ValueError(f'summary["times_are"] must be one of {TIMES_ARE}, got {times_are!r}')
    if times_are == "modeled":
        detail = "from the human time model (simulated workers), not from real people"
    elif times_are == "measured":
        detail = "measured from real workers' answers"
    else:
        detail = "some modeled (simulated workers), some measured from real workers' answers"
    return f"Times in this report are {times_are.upper()}: {detail}."


def _overview_table(summary: Mapping) -> list[str]:
    columns, rows = overview_table(dict(summary))
    if not rows:
        return []
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = [
        "<tr>"
        + "".join(f'<td class="{"name" if j == 0 else "value"}">{esc(cell)}</td>' for j, cell in enumerate(row))
        + "</tr>"
        for row in rows
    ]
    explained = (
        "s/image: human seconds per image; x polygon is how many times faster than tracing a polygon (below 1: slower)."
    )
    if len(columns) == len(COLUMNS):
        explained += (
            " Worst group: the test accuracy, on the group it does worst on, of a classifier trained with that mask."
        )
    return [
        "<h2>At a glance</h2>",
        '<div class="scroll"><table>',
        f"<tr>{head}</tr>",
        *body,
        "</table></div>",
        f"<p>{esc(explained)}</p>",
    ]


def _cost_section(summary: Mapping, cost_figure: str | None) -> list[str]:
    if cost_figure is None:
        return []
    return [
        "<h2>Cost against mask quality</h2>",
        (
            f'<figure><img src="{html.escape(quote(cost_figure))}" alt="human seconds per image against mask IoU">'
            "<figcaption>Each planner's human seconds per image against its mask IoU; saliency alone costs no human "
            "time; the polygon reference is what tracing the object would cost.</figcaption></figure>"
        ),
    ]


def _training_section(summary: Mapping, training: TrainingFigures | None) -> list[str]:
    accuracy = summary.get("accuracy")
    if not isinstance(accuracy, Mapping) or not accuracy:
        return []
    esc = html.escape
    energy = summary.get("attention_energy_in_mask") or {}
    settings = summary.get("training") or {}
    names = {
        "none": "none (plain training)",
        "patch": "crowd, fixed planner",
        "gt": "ground truth",
        "saliency": "saliency alone",
    }
    rows = [
        (names.get(guide, guide), figures.get("mean"), figures.get("worst_group"), energy.get(guide))
        for guide, figures in accuracy.items()
    ]
    adaptive = summary.get("adaptive") or {}
    if isinstance(adaptive.get("accuracy"), Mapping):
        rows.append(
            (
                "crowd, adaptive planner",
                adaptive["accuracy"].get("mean"),
                adaptive["accuracy"].get("worst_group"),
                adaptive.get("attention_energy_in_mask"),
            )
        )
    parts = [
        "<h2>Training against the shortcut</h2>",
        (
            f"<p>A {esc(str(settings.get('model', 'small')))} classifier trained "
            f"{esc(str(settings.get('epochs', '')))} epochs per guide (loss {esc(str(settings.get('loss', '')))}); "
            "test images balanced over (class, background) groups. Worst group: accuracy on the group the classifier "
            "does worst on; CAM on object: share of its class activation map on the object.</p>"
        ),
        '<div class="scroll"><table><tr><th>guide</th><th>accuracy</th><th>worst group</th><th>CAM on object</th></tr>',
        *(
            f"<tr><td>{esc(name)}</td>" + "".join(f'<td class="value">{_fraction(x)}</td>' for x in (a, w, e)) + "</tr>"
            for name, a, w, e in rows
        ),
        "</table></div>",
    ]
    if training is not None:
        charts = []
        if training.bar_chart:
            charts.append(
                f'<figure><img src="{esc(quote(training.bar_chart))}" alt="worst-group accuracy per guide">'
                "<figcaption>Test worst-group accuracy per guide.</figcaption></figure>"
            )
        if training.cams:
            charts.append(
                f'<figure><img src="{esc(quote(training.cams))}" alt="class activation maps per guide">'
                "<figcaption>Where each classifier looks (class activation maps) on test images whose "
                "background disagrees with their class; top row: the images.</figcaption></figure>"
            )
        if charts:
            parts += ['<div class="charts">', *charts, "</div>"]
        if training.page:
            parts.append(
                f'<p><a href="{esc(quote(training.page))}">The experiment\'s own page</a> (per-metric table).</p>'
            )
    return parts


def _fraction(value: object) -> str:
    return (
        f"{value:.2f}"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else "n/a"
    )


def _sample_section(figures: Sequence[tuple[str, SampleFigure, Mapping[str, str]]]) -> list[str]:
    if not figures:
        return []
    esc = html.escape
    scored = any(group != UNSCORED for group, _, _ in figures)
    title = "Images with the best, median and worst mask IoU" if scored else "Sample images"
    parts = [f"<h2>{title}</h2>"]
    current = None
    for group, sample, panels in figures:
        if group != current:
            parts.append(f"<h3>{esc(group.capitalize())}</h3>")
            current = group
        iou = "no ground truth" if sample.iou is None else f"IoU {sample.iou:.3f}"
        if sample.saliency_iou is not None:
            iou += f" (saliency alone {sample.saliency_iou:.3f})"
        parts += ['<section class="sample">', f"<h4>{esc(sample.name)}: {esc(iou)}</h4>", '<div class="panels">']
        # The panel's size up front, so the page does not jump while the images load.
        width, height = panel_size(*np.shape(sample.image)[:2])
        for panel, src in panels.items():
            caption = PANEL_CAPTIONS[panel].format(windows=len(sample.windows))
            if panel == "asked" and sample.points:
                caption = PRECISE_ASKED_CAPTION.format(clicks=len(sample.clicks))
            if panel == "truth" and np.any(np.asarray(sample.gt_mask) == GT_IGNORE):
                caption += "; orange = ignored band"
            parts.append(
                f'<figure><img src="{esc(quote(src))}" alt="{esc(sample.name)}: {esc(panel)}" '
                f'width="{width}" height="{height}"><figcaption>{esc(caption)}</figcaption></figure>'
            )
        parts += ["</div>", "</section>"]
    return parts


def render_html(
    title: str,
    summary: Mapping,
    figures: Sequence[tuple[str, SampleFigure, Mapping[str, str]]],
    notes: Sequence[str] = (),
    cost_figure: str | None = None,
    training: TrainingFigures | None = None,
) -> str:
    """The page for already-rendered figures: samples as (group, sample, panel -> path relative to the page)."""
    esc = html.escape
    rows = flatten_summary(summary)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="headline">{esc(headline(dict(summary)))}</p>',
        f'<p class="times">{esc(_times_line(summary))}</p>',
        *_overview_table(summary),
        *_cost_section(summary, cost_figure),
        *_training_section(summary, training),
        *_sample_section(figures),
    ]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>", *(f"<li>{esc(note)}</li>" for note in notes), "</ul>"]
    parts += [
        f"<details><summary>Every figure of summary.json ({len(rows)})</summary>",
        '<div class="scroll"><table>',
        *(f'<tr><th>{esc(k)}</th><td class="value">{esc(v)}</td></tr>' for k, v in rows),
        "</table></div></details>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def plot_cost(summary: Mapping, path: Path) -> Path | None:
    """The run's cost-against-IoU figure at ``path``, or None when the run has no IoU to plot (no ground truth)."""
    points = summary_points(dict(summary), str(summary.get("dataset") or "this run"))
    if not points:
        return None
    seconds = summary.get("measured_seconds_per_image") or summary.get("modeled_seconds_per_image") or {}
    iou = summary.get("mask_iou") or {}
    polygon_iou = iou.get("polygon") if iou.get("polygon") is not None else 1.0
    return plot_curves(
        points,
        float(seconds.get("polygon", 79.0)),
        path,
        polygon_iou=polygon_iou,
        saliency_iou=iou.get("saliency"),
        annotate=True,
    )


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # readable like any written file (mkstemp makes it private)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    out_dir: Path,
    title: str,
    summary: dict,
    samples: Sequence[tuple[str, SampleFigure]],
    notes: Sequence[str] = (),
    training: TrainingFigures | None = None,
) -> Path:
    """Write the report page and its figures; return the page.

    Writes ``out_dir/index.html``, the cost figure and ``out_dir/figures/<name>-<panel>.png`` per sample.
    ``samples`` are (group, sample) pairs in the order shown (see :func:`pick_samples`);
    ``summary["times_are"]`` must say whether the times are "modeled" or "measured".
    """
    out_dir = Path(out_dir)
    _times_line(summary)  # fail before rendering any figure
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    written: set[Path] = set()
    for (group, sample), stem in zip(samples, figure_stems([s.name for _, s in samples])):
        paths = render_sample(sample, figures_dir, stem)
        written.update(paths.values())
        figures.append((group, sample, {panel: f"{FIGURES_DIR}/{path.name}" for panel, path in paths.items()}))
    for stale in set(figures_dir.glob("*.png")) - written:  # samples an earlier report of this run showed
        stale.unlink()
    (out_dir / COST_FIGURE).unlink(missing_ok=True)
    cost = plot_cost(summary, out_dir / COST_FIGURE)
    page = out_dir / "index.html"
    _write_text_atomic(page, render_html(title, summary, figures, notes, cost.name if cost else None, training))
    return page
