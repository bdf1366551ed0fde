"""Creating question rows: verifications, outline checks, extreme points and picks, patch windows, grids and their
follow-ups, gold, polygons.

Every question records in ``reason`` why it was asked, so a requester can follow the policy that
asked it. What to ask is the policies' business (:mod:`crowdpatch.crowd.policies`); this module only
writes the rows, and says what the answer path knows of one (:class:`QuestionFacts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, insert, select
from sqlalchemy.orm import Session

from crowdpatch.boxes import Box
from crowdpatch.config import ProjectConfig
from crowdpatch.crowd.kinds import CELL, CORRECT, EXTREME, GOLD, GRID, OUTLINE, PATCH, PICK, POLYGON, VERIFY
from crowdpatch.patches.lattice import WindowKey, window_box
from crowdpatch.store.db import backend_of
from crowdpatch.store.models import ImageRow, RegionRow, TaskRow
from crowdpatch.store.sql import Statement

VERIFY_KEY = "verify"
GRID_KEY = "grid"


Place = tuple[int, int, int | None]
"""Where a question belongs: (project id, image id, region id; None for gold and polygons)."""


@dataclass(frozen=True)
class QuestionFacts:
    """What the answer path knows of a question without loading its ORM row."""

    id: int
    kind: str
    """One of :data:`crowdpatch.crowd.kinds.KINDS`."""
    votes_wanted: int
    """Answers it wants in all (the policy may raise it as answers come in)."""
    place: Place
    key: str | None = None
    """The window's lattice key ("level:ix:iy") for a patch question."""

    @classmethod
    def of(cls, row: TaskRow) -> QuestionFacts:
        return cls(row.id, row.kind, row.votes_wanted, (row.project_id, row.image_id, row.region_id), row.key)

    @property
    def project_id(self) -> int:
        return self.place[0]

    @property
    def image_id(self) -> int:
        return self.place[1]

    @property
    def region_id(self) -> int | None:
        return self.place[2]


def grid_resolution(task: TaskRow) -> int:
    """Cells per side of the lattice a grid question's votes are read on (a coarse first look is read finer)."""
    return int((task.spec or {}).get("resolution") or task.grid_size or 1)


def _ask(session: Session, place: Place, kind: str, key: str, level: int, box: list[int], **columns: Any) -> TaskRow:
    """Add a question of ``kind`` at ``place``; ``columns``: the rest of its row (``votes_wanted``, ``reason``...)."""
    project_id, image_id, region_id = place
    task = TaskRow(
        project_id=project_id,
        image_id=image_id,
        region_id=region_id,
        kind=kind,
        key=key,
        level=level,
        box=box,
        **columns,
    )
    session.add(task)
    return task


def _family(root: TaskRow) -> Place:
    return root.project_id, root.image_id, root.region_id


def add_verify_task(
    session: Session, project_id: int, image: ImageRow, region: RegionRow, config: ProjectConfig, votes_wanted: int
) -> TaskRow:
    reason = f"saliency cluster (mass {region.mass:.1f}): is the {config.target} inside it?"
    place = (project_id, image.id, region.id)
    return _ask(session, place, VERIFY, VERIFY_KEY, 0, list(region.box), votes_wanted=votes_wanted, reason=reason)


def add_outline_task(session: Session, project_id: int, image_id: int, region: RegionRow, box: Box) -> TaskRow:
    reason = "the saliency map's outline of the verified region may already be its mask"
    return _ask(
        session, (project_id, image_id, region.id), OUTLINE, "outline", 0, box.as_list(), votes_wanted=1, reason=reason
    )


def add_extreme_task(
    session: Session, project_id: int, image_id: int, region: RegionRow, attempt: int, reason: str
) -> TaskRow:
    """Extreme points of the target over the whole region (``attempt``: 1, or 2 when the first points led nowhere)."""
    place = (project_id, image_id, region.id)
    return _ask(session, place, EXTREME, f"extreme:{attempt}", 0, list(region.box), votes_wanted=1, reason=reason)


def add_pick_task(
    session: Session, extreme: TaskRow, points: list[list[float]], view: Box, candidates: list[str], reason: str
) -> TaskRow:
    """A pick among the candidate masks computed from ``points`` (shown over ``view``, the points' padded box)."""
    spec = {"points": points, "candidates": candidates}
    key = f"pick:{extreme.key.split(':')[1]}"
    return _ask(
        session, _family(extreme), PICK, key, 1, view.as_list(),
        parent_id=extreme.id, votes_wanted=1, spec=spec, reason=reason,
    )  # fmt: skip


def add_correct_task(
    session: Session,
    source: TaskRow,
    candidate: str,
    rounds: list[list[list[float]]],
    outline: tuple[list[list[float]], Box, str] | None = None,
) -> TaskRow:
    """Clicks on the errors of a mask, corrected by the earlier ``rounds`` of clicks.

    The mask is the ``candidate`` a pick (``source``) chose, shown over the pick's view; or an accepted saliency
    outline (``source`` the outline check, ``outline`` = its extreme points, the view, the saliency map's path).
    """
    if outline is None:
        spec = {"points": source.spec["points"], "pick": source.id, "candidate": candidate, "rounds": rounds}
        view = source.box
    else:
        points, box, saliency = outline
        spec = {"points": points, "pick": source.id, "candidate": candidate, "rounds": rounds, "saliency": saliency}
        view = box.as_list()
    number = len(rounds) + 1
    reason = f"round {number}: where is the outline of the chosen mask wrong?"
    return _ask(
        session, _family(source), CORRECT, f"correct:{source.id}:{number}", 1 + number, view,
        parent_id=source.id, votes_wanted=1, spec=spec, reason=reason,
    )  # fmt: skip


def add_gold_task(session: Session, project_id: int, image_id: int, index: int, box: Box, answer: str) -> TaskRow:
    reason = "gold: known answer from the ground-truth mask"
    place = (project_id, image_id, None)
    return _ask(
        session, place, GOLD, f"gold:{index}", 0, box.as_list(), votes_wanted=0, gold_answer=answer, reason=reason
    )


_INSERT_TASKS = insert(TaskRow.__table__)


_REGION_WINDOWS = Statement(
    f"SELECT r.box, t.key FROM region r LEFT JOIN task t ON t.region_id = r.id AND t.kind = '{PATCH}'"
    " WHERE r.id = :region",
    columns={"box": RegionRow.__table__.c.box.type, "key": None},
)


def region_windows(session: Session, region_id: int) -> tuple[Box, set[str]]:
    """A region's box and the keys of the windows already asked in it, in one statement."""
    rows = _REGION_WINDOWS.all(session, region=region_id)
    return Box.from_list(rows[0].box), {row.key for row in rows if row.key is not None}


def window_task_values(
    project_id: int,
    image_id: int,
    region_id: int,
    region_box: Box,
    keys: list[WindowKey],
    config: ProjectConfig,
    parent: tuple[int, str] | None,
    known: set[str],
) -> list[dict[str, Any]]:
    """The columns of the patch questions for ``keys`` not in ``known`` (which gains them); ``parent``: (id, key)."""
    rows = []
    for key in keys:
        name = str(key)
        if name in known:
            continue
        known.add(name)
        reason = (
            f"level {key.level}: child of window {parent[1]} voted yes"
            if parent is not None
            else "level 1: the lattice over the verified region"
        )
        rows.append(
            dict(
                project_id=project_id,
                image_id=image_id,
                region_id=region_id,
                kind=PATCH,
                key=name,
                level=key.level,
                box=window_box(region_box, key).as_list(),
                parent_id=parent[0] if parent is not None else None,
                votes_wanted=config.crowd.votes,
                reason=reason,
            )
        )
    return rows


def add_first_windows(
    session: Session, project_id: int, image_id: int, region: RegionRow, keys: list[WindowKey], config: ProjectConfig
) -> list[str]:
    """The patch questions of a region's first level (a fresh region: none is asked yet); their kinds.

    Inserted as rows (:func:`_insert_windows`), not ORM objects.
    """
    values = window_task_values(project_id, image_id, region.id, Box.from_list(region.box), keys, config, None, set())
    return [PATCH] * _insert_windows(session, values)


def insert_window_tasks(
    session: Session,
    parent: QuestionFacts,
    region_box: Box,
    keys: list[WindowKey],
    config: ProjectConfig,
    known: set[str],
) -> int:
    """The windows ``keys`` under the window ``parent``, in one INSERT; those already asked (shared with a
    neighbouring parent; ``known``: their keys, :func:`region_windows`) are skipped. How many questions it created."""
    values = window_task_values(
        parent.project_id, parent.image_id, parent.region_id, region_box, keys, config, (parent.id, parent.key), known
    )
    return _insert_windows(session, values)


def _insert_windows(session: Session, values: list[dict[str, Any]]) -> int:
    """Window questions' rows inserted; how many.

    Not ORM objects: the ORM inserts them as one statement with a parameter per column and row, which
    psycopg parses anew each time (it caches statements of at most 50 parameters), and that cost more
    than the rest of the answer that closes an image's last verification (docs/benchmarks.md, "A
    verified image's decisions"). SQLite takes them as one prepared row statement each (its driver is
    C). On PostgreSQL they go as one JSON parameter of one statement, the same text whatever their
    number: as row statements, psycopg converted and sent each row's parameters in Python, about
    twice the server's CPU per insert (same section).
    """
    if not values:
        return 0
    if backend_of(session) == "postgresql":
        _INSERT_WINDOWS_POSTGRES.run(session, rows=[_with_defaults(row) for row in values])
    else:
        session.connection().execute(_INSERT_TASKS, values)
    return len(values)


class _RowParameters:
    """What a column's Python default reads of the row being inserted (in SQLAlchemy, its execution context)."""

    def __init__(self, row: dict[str, Any]):
        self.row = row

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.row


def _with_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """A task row with every column an INSERT through SQLAlchemy would have filled in by its Python default
    (as JSON values: times as ISO text)."""
    full = dict(row)
    for column in TaskRow.__table__.columns:
        default = column.default
        if column.name in full or default is None:
            continue
        value = default.arg(_RowParameters(full)) if default.is_callable else default.arg
        full[column.name] = value.isoformat() if isinstance(value, datetime) else value
    return full


_WINDOW_COLUMNS = ", ".join(column.name for column in TaskRow.__table__.columns if column.name != "id")
"""Every column of a question's row but its id: one a row leaves out is NULL, as in an INSERT that omits it."""
_INSERT_WINDOWS_POSTGRES = Statement(
    f"INSERT INTO task ({_WINDOW_COLUMNS}) SELECT {_WINDOW_COLUMNS} FROM json_populate_recordset(NULL::task, :rows)",
    params={"rows": JSON()},
)


def add_grid_task(
    session: Session, project_id: int, region: RegionRow, config: ProjectConfig, size: int = 0, votes: int = 0
) -> TaskRow:
    """One grid screen over the region; small regions get as many cells as they have pixels per side.

    ``size`` (cells per side) and ``votes`` (answers wanted): the project's, unless given.
    """
    box = Box.from_list(region.box)
    size = min(size or config.patches.grid_size, box.width, box.height)
    place = (project_id, region.image_id, region.id)
    reason = f"grid {size} x {size} over the verified region"
    votes_wanted = votes or config.crowd.votes
    return _ask(
        session, place, GRID, GRID_KEY, 1, box.as_list(), grid_size=size, votes_wanted=votes_wanted, reason=reason
    )


def add_grid_round(
    session: Session, root: TaskRow, round_number: int, resolution: int, active: list[int], reason: str
) -> TaskRow:
    """A boundary round of a grid family: the root's grid again, with only the ``active`` cells clickable."""
    key, spec = f"grid:{root.id}:round{round_number}", {"resolution": resolution, "active": active}
    return _ask(
        session, _family(root), GRID, key, 1 + round_number, root.box,
        grid_size=resolution, parent_id=root.id, votes_wanted=1, spec=spec, reason=reason,
    )  # fmt: skip


def add_cell_task(session: Session, root: TaskRow, index: int, box: Box, reason: str) -> TaskRow:
    """A single-cell yes/no follow-up of a grid family (its key names the fine cell)."""
    key = cell_key(index)
    return _ask(session, _family(root), CELL, key, 2, box.as_list(), parent_id=root.id, votes_wanted=1, reason=reason)


def cell_key(index: int) -> str:
    return f"cell:{index}"


def cell_index(key: str) -> int:
    return int(key.split(":")[1])


def add_polygon_tasks_for_images(session: Session, project_id: int, config: ProjectConfig) -> list[TaskRow]:
    """The baseline study: one polygon question per image that has none yet (workers in polygon mode answer them)."""
    have = set(
        session.scalars(select(TaskRow.image_id).where(TaskRow.project_id == project_id, TaskRow.kind == POLYGON))
    )
    created = []
    images = session.execute(
        select(ImageRow.id, ImageRow.width, ImageRow.height)
        .where(ImageRow.project_id == project_id, ImageRow.stage != "error")
        .order_by(ImageRow.id)
    )
    for image_id, width, height in images:
        if image_id in have:
            continue
        reason = f"baseline study: a polygon around the {config.target}"
        box, votes = [0, 0, width, height], config.server.polygon_votes
        created.append(
            _ask(session, (project_id, image_id, None), POLYGON, POLYGON, 0, box, votes_wanted=votes, reason=reason)
        )
    session.flush()
    return created
