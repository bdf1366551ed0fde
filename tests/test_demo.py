"""The demo as a library call: training results in the report, and a second run reusing stored training runs."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("torch")

from crowdpatch.workflow import run_demo


class RecordedProgress:
    """Progress that remembers every step's name and total."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int | None]] = []

    @contextmanager
    def step(self, name: str, total: int | None):
        self.steps.append((name, total))
        yield lambda *args: None


@pytest.mark.slow
def test_demo_trains_every_guide_shows_it_in_the_report_and_reuses_stored_runs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = RecordedProgress()
    result = run_demo(out, quick=True, seed=0, progress=first, images=40, train=True, epochs=1)
    trained = [name for name, total in first.steps if name.startswith("training")]
    assert len(trained) == 4 and all(total == 1 for name, total in first.steps if name in trained)
    assert trained[-1] == "training 4/4: adaptive planner's masks"
    assert set(result.summary["accuracy"]) == {"none", "patch", "gt"} and "accuracy" in result.summary["adaptive"]

    page = result.report_path.read_text(encoding="utf-8")
    assert "Training against the shortcut" in page
    for image in ("experiment/worst_group.png", "experiment/cams.png"):
        assert f'<img src="{image}"' in page and (out / "report" / image).stat().st_size > 0

    again = RecordedProgress()
    second = run_demo(out, quick=True, seed=0, progress=again, images=40, train=True, epochs=1)
    reused = [name for name, _ in again.steps if name.startswith("training")]
    assert len(reused) == 4 and all(name.endswith("stored run reused") for name in reused)
    assert not any(name.startswith("generating") for name, _ in again.steps)
    assert second.summary["accuracy"] == result.summary["accuracy"]


def test_training_uses_one_thread_when_other_processes_keep_every_core_busy(monkeypatch) -> None:
    from crowdpatch import workflow

    monkeypatch.setattr(workflow.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(workflow.os, "getloadavg", lambda: (6.5, 6.0, 5.0))
    assert workflow.cpu_training_threads(2) == 1
    monkeypatch.setattr(workflow.os, "getloadavg", lambda: (0.9, 0.5, 0.2))
    assert workflow.cpu_training_threads(2) == 2
