"""What every bench script shares: Markdown tables, their section in docs/benchmarks.md, a served project.

A bench prints its table and, with ``--write``, replaces its own section of docs/benchmarks.md,
between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` (appended at the end the first time).
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import make_url

from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import BenchmarkSpec, generate_benchmark, load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"
DATA = ROOT.parent / "shared" / "data"
MASK_DATASETS = {
    "weizmann_horse": (DATA / "weizmann_horse" / "rgb", DATA / "weizmann_horse" / "figure_ground"),
    "grabcut": (DATA / "grabcut" / "images", DATA / "grabcut" / "masks"),
    "coco_mval_subset": (DATA / "coco_mval_subset" / "img", DATA / "coco_mval_subset" / "gt"),
}
"""Real images with GT masks (../shared/data): folder of images, folder of masks."""
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
"""The PostgreSQL the bench scripts use unless ``--postgres`` names another (each study a schema of it);
``postgresql://postgres@/test?host=/var/run/postgresql`` reaches the same server through its Unix socket."""


def with_settings(url: str, **settings: str) -> str:
    """``url`` whose connections start with these PostgreSQL settings (libpq's ``options``), its own query kept."""
    options = " ".join(f"-c{name}={value}" for name, value in settings.items())
    return make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False)


def cost_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The columns every mask-cost table shows, from a bench-masks ``summary.json``."""
    return {
        "images": summary["images"],
        "answers/img": summary["answers_per_image"],
        "s/img": summary["modeled_seconds_per_image"]["patch"],
        "vs polygon": summary["speedup_vs_polygon"],
        "mask IoU": summary["mask_iou"]["patch"],
        "saliency IoU": summary["mask_iou"]["saliency"],
    }


def markdown_table(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> str:
    """Rows of one shape as a Markdown table; floats with two decimals."""
    header = [key for key in rows[0] if key not in skip]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row[key]:.2f}" if isinstance(row[key], float) else str(row[key]) for key in header]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(name: str, text: str, doc: Path = BENCHMARKS) -> None:
    """Replace the text between this bench's markers in ``doc`` (appended at the end if it has none yet)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    body = doc.read_text(encoding="utf-8")
    if begin not in body:
        body = body.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    start, stop = body.index(begin) + len(begin), body.index(end)
    doc.write_text(body[:start] + "\n" + text + "\n" + body[stop:], encoding="utf-8")


def publish(name: str, rows: list[dict[str, Any]], note: str, write: bool) -> None:
    """Print a bench's table; with ``write``, also put it under ``note`` in its section of docs/benchmarks.md."""
    table = markdown_table(rows)
    print(table)
    if write:
        write_section(name, note + "\n\n" + table)


def cpu_model() -> str:
    """The host's CPU as /proc/cpuinfo names it: runs on different hosts differ by 3x in CPU per answer."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


class StealMeter:
    """Share of CPU time the hypervisor gave to other guests ("steal" in /proc/stat) since it was made.

    On a shared VM the same run differs by up to 1.8x in answers/s; steal time is the part of that
    the host can be blamed for, so the load bench prints it beside each run.
    """

    def __init__(self) -> None:
        self._before = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        return (fields[7] if len(fields) > 7 else 0), sum(fields)

    def percent(self) -> float:
        steal, total = self._read()
        elapsed = total - self._before[1]
        return 100.0 * (steal - self._before[0]) / elapsed if elapsed > 0 else 0.0


def connections_per_process(port: int) -> list[int]:
    """Established TCP connections to local ``port``, counted per process that holds them, most first (Linux).

    ``serve --workers N`` spreads keep-alive connections over its processes by a hash of their addresses
    (``SO_REUSEPORT``): a few dozen connections often split unevenly (19/12 of 31), and the busier process
    sets the p99, so the load bench prints the split beside each run. Empty where /proc cannot tell.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if local_port == port and state == "01":  # ESTABLISHED, the server's end of the connection
                inodes.add(f"socket:[{inode}]")
    counts: Counter[int] = Counter()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # a process that ended, or one not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    counts[int(fd_dir.parent.name)] += 1
            except OSError:  # closed meanwhile
                continue
    return sorted(counts.values(), reverse=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def builtin_files(out: Path, n_images: int) -> tuple[Path, Path, Path]:
    """The built-in benchmark's files under ``out/data`` (64 px): (images, labels CSV, masks), as
    :func:`served_project` takes them."""
    labels = generate_benchmark(out / "data", BenchmarkSpec(n_images=n_images, size=64, seed=0))
    return out / "data" / "images", labels, out / "data" / "masks"


def served_project(
    root: Path, data: tuple[Path, Path, Path], db_url: str | None, name: str, configure: Callable[[ProjectConfig], None]
) -> Project:
    """A proposed project over the built-in benchmark files ``data`` (images, labels, masks), ready to serve."""
    images, labels, masks = data
    config = ProjectConfig(name=name, target="object", db_url=db_url, images_dir=str(images), masks_dir=str(masks))
    config.crowd.gold_rate = 0.0
    configure(config)
    project = Project.create(root, config)
    add_images(project, load_folder_dataset(images, labels, masks).records)
    propose(project)
    return project
