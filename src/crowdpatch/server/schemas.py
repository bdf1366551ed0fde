"""The JSON API's request and response bodies (kept apart from the store's ORM rows)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


MAX_POLYGON_POINTS = 1000
"""A careful outline of one object has tens to a few hundred points; more is a client gone wrong (or an attack)."""

MAX_GRID_CELLS = 4096
"""A 64 x 64 grid, far past any useful screen."""

PlatformId = Annotated[str, Field(max_length=200)]

MTURK_SUBMIT_HOSTS = r"^https://(www|workersandbox)\.mturk\.com/?$"
"""The only ``turkSubmitTo`` values MTurk sends; the completion form is POSTed there, so nothing else is accepted."""


class SessionRequest(_Body):
    platform: Literal["local", "prolific", "mturk", "simulated"]
    worker_id: str = Field(min_length=1, max_length=200)
    invite: str | None = Field(None, max_length=200)
    study_id: PlatformId | None = None
    session_id: PlatformId | None = None
    assignment_id: PlatformId | None = None
    hit_id: PlatformId | None = None
    turk_submit_to: str | None = Field(None, pattern=MTURK_SUBMIT_HOSTS)
    mode: Literal["patch", "polygon"] = "patch"


class SessionResponse(BaseModel):
    token: str
    mode: str
    answers_given: int
    answers_per_session: int


class TaskResponse(BaseModel):
    task_id: str
    kind: Literal["verify", "patch", "grid", "polygon"]
    image_url: str
    context_url: str
    question: str
    lease_expires_at: str
    image_id: int
    box: list[int]
    grid_size: int | None
    image_width: int
    image_height: int
    view_box: list[int]
    """The part of the image the picture shows (x0, y0, x1, y1): the whole image for a verification or a polygon;
    for a patch or a grid its box, in dimmed surroundings when the box is small (the box then sits inside it)."""
    variant: Literal["outline"] | None = None
    """"outline": a yes/no about the drawn outline ("does it cover the target well?"), shown like a verification."""
    active_cells: list[int] | None = None
    """A grid's boundary round: only these cells are clickable (the others are decided); null: every cell."""


class Cells(_Body):
    cells: list[Annotated[int, Field(ge=0, lt=MAX_GRID_CELLS)]] = Field(max_length=MAX_GRID_CELLS)


Point = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=2, max_length=2)]


class Polygon(_Body):
    polygon: list[Point] = Field(min_length=3, max_length=MAX_POLYGON_POINTS)


class AnswerRequest(_Body):
    task_id: str = Field(pattern=r"^\d{1,18}$")
    answer: Literal["yes", "no"] | Cells | Polygon
    client_id: str = Field(min_length=1, max_length=100)
    client_ms: int = Field(ge=0, le=86_400_000)
    next: bool = Field(
        False, description="Also lease the next question and return it as `next` (one round trip instead of two)."
    )
    exclude: list[Annotated[str, Field(pattern=r"^\d{1,18}$")]] = Field(
        default_factory=list,
        max_length=8,
        description="With `next`: task ids already on screen (as `GET /tasks/next?exclude=`).",
    )

    def value(self) -> Any:
        return self.answer if isinstance(self.answer, str) else self.answer.model_dump()


NextStatus = Literal["task", "none", "session_complete", "stopped", "too_many_held"]


class AnswerResponse(BaseModel):
    answer_id: int
    task_id: str
    answers_given: int
    session_complete: bool
    worker_stopped: bool = False
    """True when quality control has stopped this worker (this answer included): no more questions;
    ``GET /tasks/next`` says why (403).
    """
    next: TaskResponse | None = None
    """The next question, when the request asked for it (``"next": true``) and there is one."""
    next_status: NextStatus | None = None
    """With ``"next": true``: "task", or why there is none (what ``GET /tasks/next`` says by 204, 403 or 429)."""


class CompletionResponse(BaseModel):
    platform: str
    code: str | None
    redirect_url: str | None = None
    submit_url: str | None = None
    fields: dict[str, str] | None = None


class InviteRequest(_Body):
    label: str = Field(default="local", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    mode: Literal["patch", "polygon"] = "patch"


class ExportRequest(_Body):
    formats: list[Literal["png", "npy", "coco"]] = ["png", "coco"]
