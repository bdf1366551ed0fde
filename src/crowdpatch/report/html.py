"""The HTML report: one self-contained page (no JavaScript, no external resources) plus a PNG
per sample in ``figures/``."""

from __future__ import annotations

import html
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from crowdpatch.report.figures import SampleFigure, render_sample

TIMES_ARE = ("modeled", "measured")
FIGURES_DIR = "figures"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
.times { font-weight: bold; padding: 0.4em 0.8em; background: #fff4d6; display: inline-block; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
"""


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


def figure_filenames(names: Sequence[str]) -> list[str]:
    """A safe, unique PNG file name per sample name (names may hold any characters)."""
    used: set[str] = set()
    filenames = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sample"
        candidate, n = stem, 1
        while candidate.lower() in used:  # case-insensitive file systems
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate.lower())
        filenames.append(f"{candidate}.png")
    return filenames


def _times_line(summary: Mapping) -> str:
    times_are = summary.get("times_are")
    if times_are not in TIMES_ARE:
        raise ValueError(f'summary["times_are"] must be one of {TIMES_ARE}, got {times_are!r}')
    if times_are == "modeled":
        detail = "from the human time model (simulated workers), not from real people"
    else:
        detail = "measured from real workers' answers"
    return f"Times in this report are {times_are.upper()}: {detail}."


def render_html(
    title: str,
    summary: Mapping,
    figures: Sequence[tuple[SampleFigure, str]],
    notes: Sequence[str] = (),
) -> str:
    """The page for already-rendered figures, given as (sample, path relative to the page)."""
    esc = html.escape
    rows = [(k, v) for k, v in flatten_summary(summary) if k != "times_are"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="times">{esc(_times_line(summary))}</p>',
        "<h2>Summary</h2>",
        "<table>",
        *(f'<tr><th>{esc(k)}</th><td class="value">{esc(v)}</td></tr>' for k, v in rows),
        "</table>",
    ]
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>", *(f"<li>{esc(note)}</li>" for note in notes), "</ul>"]
    if figures:
        parts.append(f"<h2>Samples ({len(figures)})</h2>")
    for sample, src in figures:
        iou = "n/a" if sample.iou is None else f"{sample.iou:.3f}"
        parts += [
            "<figure>",
            f'<img src="{esc(quote(src))}" alt="{esc(sample.name)}" loading="lazy">',
            f"<figcaption>{esc(sample.name)}: IoU {iou}</figcaption>",
            "</figure>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    samples: Sequence[SampleFigure],
    notes: Sequence[str] = (),
) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/figures/<name>.png`` per sample; return the page.

    ``summary["times_are"]`` must say whether the times are "modeled" or "measured".
    """
    out_dir = Path(out_dir)
    _times_line(summary)  # fail before rendering hundreds of figures
    figures_dir = out_dir / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for sample, filename in zip(samples, figure_filenames([s.name for s in samples])):
        render_sample(sample, figures_dir / filename)
        figures.append((sample, f"{FIGURES_DIR}/{filename}"))
    page = out_dir / "index.html"
    _write_text_atomic(page, render_html(title, summary, figures, notes))
    return page
