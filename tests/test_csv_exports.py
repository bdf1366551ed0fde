"""CSV exports keep what workers typed from running as a spreadsheet formula, and numbers stay numbers."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from crowdpatch.csv_export import SafeWriter, safe_cell, write_frame
from crowdpatch.server.app import create_app

FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1"]
"""Worker ids a spreadsheet would read as formulas (OWASP's CSV-injection starts)."""


def read_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_text_that_starts_a_formula_is_quoted_and_numbers_are_not():
    buffer = io.StringIO()
    SafeWriter(buffer).writerow([*FORMULAS, "plain", "a=b", -3.5, -2, 0.0, None])
    row = read_rows(buffer.getvalue())[0]
    assert row[: len(FORMULAS)] == ["'" + text for text in FORMULAS]
    assert row[len(FORMULAS) :] == ["plain", "a=b", "-3.5", "-2", "0.0", ""]
    assert safe_cell(-1) == -1 and safe_cell(float("-inf")) == float("-inf") and safe_cell(True) is True


def test_a_frame_keeps_its_numeric_columns_numeric(tmp_path):
    frame = pd.DataFrame({"worker": ["=1+1", "bob"], "agreement": [-0.5, float("nan")], "answers": [-3, 4]})
    write_frame(frame, tmp_path / "w.csv")
    back = pd.read_csv(tmp_path / "w.csv", keep_default_na=True)
    assert list(back["worker"]) == ["'=1+1", "bob"]
    assert back["agreement"].dtype.kind == "f" and back["agreement"][0] == -0.5 and pd.isna(back["agreement"][1])
    assert list(back["answers"]) == [-3, 4]


def answered_by(project, client, workers: list[str]) -> None:
    """Each worker (a Prolific id as given) answers one question through the API."""
    for index, worker in enumerate(workers):
        opened = client.post(
            f"/api/v1/projects/{project.config.name}/sessions", json={"platform": "prolific", "worker_id": worker}
        )
        assert opened.status_code == 201, opened.text
        auth = {"Authorization": f"Bearer {opened.json()['token']}"}
        task = client.get("/api/v1/tasks/next", headers=auth).json()
        body = {"task_id": task["task_id"], "answer": "yes", "client_id": f"c-{index}", "client_ms": 1500}
        assert client.post("/api/v1/answers", json=body, headers=auth).status_code == 201


@pytest.fixture
def formula_workers(make_project):
    def configure(config) -> None:
        config.crowd.gold_rate = 0.0

    project = make_project(n_images=6, size=64, configure=configure)
    with TestClient(create_app(project)) as client:
        answered_by(project, client, FORMULAS)
        yield project, client


def test_answers_csv_quotes_worker_ids_that_would_run_as_formulas(formula_workers):
    project, client = formula_workers
    response = client.get(
        f"/api/v1/projects/{project.config.name}/answers.csv",
        headers={"X-API-Key": project.config.server.effective_api_key()},
    )
    assert response.status_code == 200
    header, *rows = read_rows(response.text)
    column = {name: index for index, name in enumerate(header)}
    assert [row[column["worker"]] for row in rows] == ["'" + text for text in FORMULAS]
    assert all(float(row[column["seconds"]]) == 1.5 and row[column["client_ms"]] == "1500" for row in rows)
    assert all(row[column["value"]] == '"yes"' for row in rows)


def test_workers_csv_quotes_worker_ids_that_would_run_as_formulas(formula_workers, invoke, tmp_path):
    project, _client = formula_workers
    result = invoke("workers", project.directory, "--csv", tmp_path / "workers.csv")
    assert result.exit_code == 0, result.stdout
    table = pd.read_csv(tmp_path / "workers.csv")
    assert sorted(table["worker"]) == sorted("'" + text for text in FORMULAS)
    assert table["answers"].dtype.kind == "i" and set(table["answers"]) == {1}
