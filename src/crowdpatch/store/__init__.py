"""The project store: SQLAlchemy models and Alembic migrations (SQLite by default)."""

from crowdpatch.store.db import open_database
from crowdpatch.store.models import (
    AnswerRow,
    Base,
    ImageRow,
    LeaseRow,
    MaskRow,
    ProjectRow,
    RegionRow,
    TaskRow,
    WorkerRow,
)

__all__ = [
    "AnswerRow",
    "Base",
    "ImageRow",
    "LeaseRow",
    "MaskRow",
    "ProjectRow",
    "RegionRow",
    "TaskRow",
    "WorkerRow",
    "open_database",
]
