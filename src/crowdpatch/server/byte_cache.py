"""A least-recently-used cache bounded by the bytes of what it holds, not by a count of entries.

A count bounds nothing when entries differ in size by a thousand times (a 64 px photo and a
5000 x 4000 one, a thumbnail and a 2400 px picture): the server's memory is bounded by bytes.
Thread-safe: the server draws pictures on its thread pool.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Entries of known sizes, the least recently used dropped first to stay within ``budget`` bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self.size = 0
        """Bytes held now: never more than ``budget``."""
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: V, size: int) -> None:
        """Keep ``value`` (``size`` bytes); one larger than the whole budget is not kept."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.size -= old[1]
            if size > self.budget:
                return
            while self._entries and self.size + size > self.budget:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.size -= dropped
            self._entries[key] = (value, size)
            self.size += size

    def __len__(self) -> int:
        return len(self._entries)
