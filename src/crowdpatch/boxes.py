"""Axis-aligned integer boxes: the one geometry primitive every stage shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Box:
    """A half-open pixel rectangle ``[x0, x1) x [y0, y1)`` in image coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"empty box {self}")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    @classmethod
    def from_list(cls, values: list[int] | tuple[int, int, int, int]) -> "Box":
        x0, y0, x1, y1 = (int(v) for v in values)
        return cls(x0, y0, x1, y1)

    @classmethod
    def whole(cls, width: int, height: int) -> "Box":
        return cls(0, 0, width, height)

    def contains(self, other: "Box") -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    def clip(self, width: int, height: int) -> "Box":
        """This box cut to an image of the given size."""
        return Box(max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1))

    def pad(self, fraction: float, width: int, height: int) -> "Box":
        """Grow by ``fraction`` of each side on every side, then clip to the image."""
        dx = round(self.width * fraction)
        dy = round(self.height * fraction)
        return Box(self.x0 - dx, self.y0 - dy, self.x1 + dx, self.y1 + dy).clip(width, height)
