"""Rows written straight into a database held at an older schema revision, to test what an upgrade makes of them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

DATE = "2026-01-01"


def add_project_and_image(connection: Connection) -> None:
    """Project 1 looking for a horse, with one 8 x 8 training image (id 1) waiting for its verification."""
    connection.execute(
        text("INSERT INTO project (id, name, target, created_at) VALUES (1, 'p', 'horse', :date)"), {"date": DATE}
    )
    connection.execute(
        text(
            "INSERT INTO image (id, project_id, path, width, height, split, groups, stage)"
            " VALUES (1, 1, 'a.png', 8, 8, 'train', '{}', 'verify')"
        )
    )


def add_open_task(
    connection: Connection, task_id: int = 1, kind: str = "verify", key: str = "verify", level: int = 0
) -> None:
    """An open question on image 1 that wants 3 answers."""
    connection.execute(
        text(
            "INSERT INTO task (id, project_id, image_id, kind, key, level, box, votes_wanted, state, reason,"
            " created_at) VALUES (:id, 1, 1, :kind, :key, :level, '[0, 0, 8, 8]', 3, 'open', '', :date)"
        ),
        {"id": task_id, "kind": kind, "key": key, "level": level, "date": DATE},
    )
