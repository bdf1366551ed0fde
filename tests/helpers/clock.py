"""A clock that tests set by hand: what dispatchers and the connection balancer read as "now"."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
