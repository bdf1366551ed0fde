"""Upkeep of a served store on a thread of its own: SQLite's WAL checkpoints, PostgreSQL's lease vacuum."""

from __future__ import annotations

import threading


class MaintenanceThread:
    """A daemon thread running :meth:`_run` from :meth:`_start` until :meth:`stop` (``_stop`` is set)."""

    def __init__(self, name: str):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        """Called by a subclass once its own state is set: the thread reads it from its first step."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
