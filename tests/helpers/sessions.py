"""Worker sessions opened through the API, as the worker page opens them."""

from __future__ import annotations


def open_session(client, project, worker="p1", platform="prolific", headers=None, **extra) -> dict[str, str]:
    """A Prolific-style session for ``worker`` (``extra`` adds or overrides body fields); its bearer header."""
    body = {"platform": platform, "worker_id": worker, "study_id": "s", "session_id": "x", **extra}
    response = client.post(f"/api/v1/projects/{project.config.name}/sessions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}
