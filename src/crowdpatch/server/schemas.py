"""The JSON API's request and response bodies (kept apart from the store's ORM rows)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator

from crowdpatch.crowd.dispatch.rules import MAX_CLICKS


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Answer(_Body):
    """An answer form: numbers must be JSON numbers (not ``true``, not ``"1"``), whole where a whole one is meant.

    Strict, so pydantic converts nothing: a grid cell ``1.0`` or ``"1"``, a coordinate ``"12"`` or ``true``
    is a 422, not an answer the worker did not give.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def storable_text(value: str) -> str:
    """Text every store keeps: no NUL character, no lone surrogate.

    PostgreSQL refuses a NUL in text and JSON, and a lone surrogate (``"\\ud800"`` in JSON) is no
    text UTF-8 can encode: either would be a 500 where the value is stored. (Pydantic refuses a lone
    surrogate itself only in a string with a length or pattern constraint.)
    """
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must not contain a lone surrogate (\\ud800-\\udfff), which is not Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(storable_text)]
"""A string a client chooses that is stored (worker and platform ids, client ids): see :func:`storable_text`."""


MAX_POLYGON_POINTS = 1000
"""A careful outline of one object has tens to a few hundred points; more is a client gone wrong (or an attack)."""

MAX_GRID_CELLS = 4096
"""A 64 x 64 grid, far past any useful screen."""

PlatformId = Annotated[Text, Field(max_length=200)]

MTURK_SUBMIT_HOSTS = r"^https://(www|workersandbox)\.mturk\.com/?$"
"""The only ``turkSubmitTo`` values MTurk sends; the completion form is POSTed there, so nothing else is accepted."""


class SessionRequest(_Body):
    platform: Literal["local", "prolific", "mturk", "simulated"]
    worker_id: Text = Field(min_length=1, max_length=200)
    invite: Text | None = Field(None, max_length=200)
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


MAX_CHOICES = 8
"""Outlines one pick may offer (it offers one or two): bounds a choice and a picture's ``k``."""


class TaskResponse(BaseModel):
    task_id: str
    kind: Literal["verify", "patch", "grid", "polygon", "extreme", "pick", "correct"]
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
    """The part of the image the picture shows (x0, y0, x1, y1): the whole image for a verification, a polygon or
    extreme points; a pick's or a correction's box; for a patch or a grid its box, in dimmed surroundings when the
    box is small (the box then sits inside it). A click at (u, v) in a picture shown w x h maps to image pixel
    (x0 + u / w * (x1 - x0), y0 + v / h * (y1 - y0))."""
    variant: Literal["outline"] | None = None
    """"outline": a yes/no about the drawn outline ("does it cover the target well?"), shown like a verification."""
    active_cells: list[int] | None = None
    """A grid's boundary round: only these cells are clickable (the others are decided); null: every cell."""
    choice_urls: list[str] | None = None
    """A pick: the pictures of its outlines, outline k over the view box at index k (answer ``{"choice": k}``).
    Each takes ``px`` and ``dpr`` like ``image_url``; null for every other kind."""


class Cells(_Answer):
    cells: list[Annotated[int, Field(ge=0, lt=MAX_GRID_CELLS)]] = Field(max_length=MAX_GRID_CELLS)


Point = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=2, max_length=2)]


class Polygon(_Answer):
    polygon: list[Point] = Field(min_length=3, max_length=MAX_POLYGON_POINTS)


class ExtremePoints(_Answer):
    """An extreme answer: the target's four ends (top, bottom, left, right, in that order) in image pixels."""

    points: list[Point] = Field(min_length=4, max_length=4)


class NotHere(_Answer):
    """An extreme answer: the photo shows no target."""

    not_here: Literal[True]

    @field_validator("not_here", mode="before")
    @classmethod
    def _exactly_true(cls, value: Any) -> Any:
        # A Literal[True] field takes 1 and 1.0 too, strict or not (they equal True in Python).
        if value is not True:
            raise ValueError("not_here is the JSON boolean true")
        return value


class Choice(_Answer):
    """A pick's answer: outline k fits best (counting from 0), or null: none of them fits well."""

    choice: Annotated[StrictInt, Field(ge=0, lt=MAX_CHOICES)] | None


class Clicks(_Answer):
    """A correction's answer: where the outline shown is wrong, in image pixels; none: it fits."""

    clicks: list[Point] = Field(max_length=MAX_CLICKS)


class AnswerRequest(_Body):
    task_id: str = Field(pattern=r"^\d{1,18}$")
    answer: Literal["yes", "no"] | Cells | Polygon | ExtremePoints | NotHere | Choice | Clicks
    client_id: Text = Field(min_length=1, max_length=100)
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
