"""Key press to next patch shown, in headless Chromium (Debian's), over N answers (not a test).

The worker page records, for every answer, the time from the key event (its ``timeStamp``) to
the first animation frame after the next task's decoded image is in the page
(``window.crowdpatch.latencies``). The server runs in this process (uvicorn thread) on SQLite;
the next task is prefetched while one is shown. One worker answers, so every question wants one
vote (else the walk would stop at the verification questions). Grid screens are answered with
Enter, the others with Y / N.

    python bench/keypress.py [--answers 200] [--think-ms 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from playwright.sync_api import sync_playwright

from benchkit import builtin_files
from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.server.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="Pause after each patch is shown before the key press (0: back to back, the worst case; "
        "300: the fastest answer quality control accepts, crowd.min_seconds_per_answer).",
    )
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="crowdpatch-keypress-"))
    images, labels, masks = builtin_files(out, args.images)
    config = ProjectConfig(name="keys", target="object", images_dir=str(images), masks_dir=str(masks))
    config.crowd.gold_rate = 0.0
    config.crowd.votes = 1  # one worker: each answer closes its question, so the walk (and the work) goes on
    config.crowd.min_seconds_per_answer = 0.0  # a script answers faster than any person: do not stop it
    config.server.answers_per_session = args.answers + 50
    config.server.rate_limit_worker_per_second = 0  # one worker at machine speed: far past any person's rate
    project = Project.create(out / "project", config)
    add_images(project, load_folder_dataset(images, labels, masks).records)
    propose(project)
    server = uvicorn.Server(
        uvicorn.Config(create_app(project), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--disable-gpu", "--disable-quic"]
        )
        page = browser.new_page()
        page.goto(f"{url}/w/keys?PROLIFIC_PID=bench&STUDY_ID=s&SESSION_ID=s")
        page.get_by_role("button", name="Start").click()
        for i in range(args.answers + 1):
            page.wait_for_function(
                "document.getElementById('frame').dataset.taskId"
                " && document.body.dataset.shown === document.getElementById('frame').dataset.taskId",
                timeout=10_000,
            )
            if i == args.answers:
                break
            task = page.locator("#frame").get_attribute("data-task-id")
            if args.think_ms:
                page.wait_for_timeout(args.think_ms)
            # Grid screens (the default presentation's patch questions) are answered with Enter.
            kind = page.locator("#frame").get_attribute("data-kind")
            page.keyboard.press("Enter" if kind == "grid" else "y" if i % 2 else "n")
            page.wait_for_function(
                f"document.getElementById('frame').dataset.taskId !== '{task}'"
                " || !document.getElementById('finished').hidden"
            )
            if page.locator("#finished").is_visible():
                break  # this worker has seen every question it may answer
        latencies = np.array(page.evaluate("window.crowdpatch.latencies"))
        waited = page.evaluate("window.crowdpatch.waited")
        browser.close()
    server.should_exit = True
    print(
        f"{len(latencies)} answers, {args.think_ms:.0f} ms between shown and key press: "
        f"key press -> next patch shown p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p95 {np.percentile(latencies, 95):.1f} ms, max {latencies.max():.1f} ms; "
        f"{waited} key presses found the next patch not yet decoded; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
