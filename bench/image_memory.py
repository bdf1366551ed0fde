"""Memory and CPU of `crowdpatch serve` drawing the worker pictures of many large photos (not a test).

Builds a project of ``--photos`` JPEGs of ``--size`` pixels (5000 x 4000 by default): ``--variants``
distinct photos are generated (a disc on a gradient with noise, so saliency finds an object) and
each is linked under many names, so the disk holds a few originals while the server sees every
name as a photo of its own (its own image row, questions, scaled copy and cache entries). Step 1
(saliency) runs on one name per variant; the other names get the same regions and questions
(proposing at full size costs seconds of CPU per photo, and what is measured here is serving).

Then a real `crowdpatch serve` process is started and one simulated worker walks every question:
next question, its picture and its context picture (the sizes the worker page asks for by
default), answer "no" (a grid: no cell). Afterwards the pictures of the first ``--again``
questions are asked for again at another width (their photos long out of memory: drawn from
``scaled/``) and those of the last ``--again`` as before (still in the picture cache). Requests go
one at a time, so the server's CPU time (user + system, /proc/PID/stat, in 10 ms ticks: means over
many requests) between a request and its reply is that request's. RSS at start: the server process
ready, before any request. Peak RSS is the server process's VmHWM (/proc/PID/status) at the end.

    python bench/image_memory.py [--photos 1000] [--size 5000 4000] [--variants 4] [--again 200] [--write]

Columns: photos; tasks: questions asked about them; requests: pictures served; peak RSS: the
server process's high-water mark of resident memory; ms CPU per picture: first picture of a photo
(the original decoded at a reduced scale, scaled to 2,400 px, saved to ``scaled/``, drawn), another
picture of a photo already in memory, a picture of a photo read back from ``scaled/`` (out of
memory), a picture repeated (from the picture cache); scaled/: the folder's size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

import httpx
import numpy as np
from PIL import Image

from benchkit import cpu_model, free_port, markdown_table, write_section
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.questions import add_verify_task
from crowdpatch.datasets import load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.store.models import ImageRow, RegionRow

SECTION = "image_memory"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def photo(path: Path, size: tuple[int, int], seed: int) -> None:
    """A JPEG with a bright disc on a gradient, placed by ``seed``, and noise (quality 90, as a camera's)."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[0:height, 0:width]
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[..., 0] = (40 + 60 * x / width).astype(np.uint8)
    pixels[..., 1] = pixels[..., 0]
    pixels[..., 2] = pixels[..., 0] + 20
    pixels[(x - cx) ** 2 + (y - cy) ** 2 < (height * 0.22) ** 2] = (230, 80, 40)
    pixels += rng.integers(0, 12, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links refused: a copy takes the disk instead
        shutil.copyfile(source, target)


def build_project(root: Path, photos: int, size: tuple[int, int], variants: int) -> Project:
    """The project: ``variants`` photos proposed, the other names given the same regions and questions."""
    originals, folder = root / "originals", root / "photos"
    originals.mkdir(parents=True)
    folder.mkdir()
    for v in range(variants):
        photo(originals / f"variant{v}.jpg", size, seed=v)
    names = [folder / f"photo{i:05d}.jpg" for i in range(photos)]
    for i, name in enumerate(names):
        link_or_copy(originals / f"variant{i % variants}.jpg", name)
    config = ProjectConfig(name="photos", target="object", images_dir=str(folder))
    config.crowd.gold_rate = 0.0
    config.server.answers_per_session = 10 * photos  # one worker walks every question
    config.server.rate_limit_worker_per_second = 0  # the pictures at machine speed
    config.server.rate_limit_ip_per_second = 0
    project = Project.create(root / "project", config)
    records = load_folder_dataset(folder).records
    templates = {str(name) for name in names[:variants]}
    add_images(project, [r for r in records if str(r.path) in templates])
    report = propose(project)
    if report.problems:
        raise RuntimeError(f"step 1 failed: {report.problems}")
    add_images(project, [r for r in records if str(r.path) not in templates])
    copy_proposals(project, variants)
    return project


def copy_proposals(project: Project, variants: int) -> None:
    """Give every photo not proposed the regions and verify questions of the proposed photo it links to."""
    votes = 1
    with project.sessions.begin() as session:
        rows = session.query(ImageRow).filter(ImageRow.project_id == project.id).order_by(ImageRow.id).all()
        templates, pending = rows[:variants], rows[variants:]
        for i, image in enumerate(pending, start=variants):
            template = templates[i % variants]
            image.width, image.height, image.saliency_path = template.width, template.height, template.saliency_path
            for region in template.regions:
                copy = RegionRow(image_id=image.id, source=region.source, box=region.box, outline=region.outline)
                copy.mass = region.mass
                session.add(copy)
                session.flush()
                add_verify_task(session, project.id, image, copy, project.config, votes)
            image.stage = "verify"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of ``pid`` in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmHWM"].split()[0]) / 1024, int(status["VmRSS"].split()[0]) / 1024


@dataclass
class Walk:
    first: list[float] = field(default_factory=list)
    """ms CPU of the first picture of each photo."""
    in_memory: list[float] = field(default_factory=list)
    from_scaled: list[float] = field(default_factory=list)
    repeated: list[float] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    requests: int = 0


def picture(http: httpx.Client, pid: int, url: str, walk: Walk) -> float:
    """Ask for one picture; the server's CPU ms it took."""
    before = cpu_seconds(pid)
    response = http.get(url)
    after = cpu_seconds(pid)
    if response.status_code != 200 or response.headers.get("content-type") != "image/jpeg":
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
    walk.requests += 1
    return 1000 * (after - before)


def walk_questions(http: httpx.Client, pid: int, project: Project, again: int) -> Walk:
    key = {"X-API-Key": project.config.server.effective_api_key()}
    opened = http.post(
        f"/api/v1/projects/{project.config.name}/sessions",
        json={"platform": "simulated", "worker_id": "pictures"},
        headers=key,
    )
    opened.raise_for_status()
    auth = {"Authorization": f"Bearer {opened.json()['token']}"}
    walk = Walk()
    seen: set[int] = set()
    while True:
        step = http.get("/api/v1/tasks/next", headers=auth)
        if step.status_code != 200:
            break  # 204: no question left (or the session complete)
        task = step.json()
        first = task["image_id"] not in seen
        seen.add(task["image_id"])
        ms = picture(http, pid, task["image_url"], walk)
        (walk.first if first else walk.in_memory).append(ms)
        walk.in_memory.append(picture(http, pid, task["context_url"], walk))
        walk.tasks.append(task)
        answer = {"cells": []} if task["kind"] == "grid" else "no"  # nothing there: each photo's questions end soon
        body = {"task_id": task["task_id"], "answer": answer, "client_id": f"a{len(walk.tasks)}", "client_ms": 1500}
        answered = http.post("/api/v1/answers", json=body, headers=auth)
        if answered.status_code not in (200, 201):
            raise RuntimeError(f"answer to {task['kind']} question: {answered.status_code} {answered.text[:300]}")
    for task in walk.tasks[:again]:  # another width: not in the picture cache, drawn from the photo again
        walk.from_scaled.append(picture(http, pid, task["image_url"] + "&px=600", walk))
    for task in walk.tasks[-again:]:
        walk.repeated.append(picture(http, pid, task["image_url"], walk))
    return walk


def serve(project_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "crowdpatch", "serve", str(project_dir), "--port", str(port)]
    process = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"serve exited ({process.returncode}); see {log}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"serve did not start; see {log}")


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*") if f.is_file()) / 2**20 if folder.is_dir() else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--size", type=int, nargs=2, default=[5000, 4000], metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--variants", type=int, default=4, help="Distinct photos generated (the rest are links).")
    parser.add_argument("--again", type=int, default=200, help="Questions whose pictures are asked for again.")
    parser.add_argument("--write", action="store_true", help=f"Replace the {SECTION} section of docs/benchmarks.md.")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="crowdpatch-image-memory-"))
    size = (args.size[0], args.size[1])
    started = time.perf_counter()
    project = build_project(root, args.photos, size, min(args.variants, args.photos))
    project.close()
    built = time.perf_counter() - started
    process, url = serve(project.directory, root / "serve.log")
    try:
        _, at_start = peak_rss_mb(process.pid)
        started = time.perf_counter()
        with httpx.Client(base_url=url, timeout=120) as http:
            walk = walk_questions(http, process.pid, project, args.again)
        seconds = time.perf_counter() - started
        peak, resident = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    row = {
        "photos": args.photos,
        "photo px": f"{size[0]} x {size[1]}",
        "tasks": len(walk.tasks),
        "requests": walk.requests,
        "RSS at start MB": round(at_start),
        "peak RSS MB": round(peak),
        "RSS at end MB": round(resident),
        "ms CPU first picture of a photo": round(mean(walk.first)),
        "ms CPU photo in memory": round(mean(walk.in_memory), 1),
        "ms CPU photo from scaled/": round(mean(walk.from_scaled), 1) if walk.from_scaled else "-",
        "ms CPU picture repeated": round(mean(walk.repeated), 1) if walk.repeated else "-",
        "scaled/ MB": round(folder_mb(project.path("scaled"))),
        "seconds": round(seconds),
    }
    command = "python bench/image_memory.py" + (f" --photos {args.photos}" if args.photos != 1000 else "")
    text = "\n".join(
        [
            f"`{command}`",
            "",
            f"{cpu_model()}, {os.cpu_count()} cores; one `serve` process (SQLite); {args.variants} distinct "
            f"photos linked under {args.photos} names; CPU ms are means per picture request; project built "
            f"in {built:.0f} s.",
            "",
            markdown_table([row]),
        ]
    )
    print(text)
    print(f"(project and server log in {root})")
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
