"""The requester's figures (dashboard, progress), computed off the request path by a background thread each.

Computing the figures reads every answer of the study (progress, pace, the worker-quality table
over the votes' aggregation): seconds at a thousand images, minutes at a hundred thousand; counting
progress alone takes seconds there. Done inside each request, every open dashboard would repeat that
work on every poll. Instead a request answers the last computed figures at once, saying how old
they are (``as_of``, ``stale_seconds``), and a single thread refreshes them while they are being
watched:

* never more often than every ``max(min_interval, cost_factor x last compute_seconds)``, so
  refreshing takes at most about a fifth of one core however many dashboards poll;
* only after a request: the thread is started by the first dashboard request and ends once none
  has come for ``idle_after`` seconds (the next request starts it again), so a server nobody
  watches never pays, and apps made by tests leave no thread running for long;
* never two computations at once, and a failed refresh is logged and keeps the last good figures.

The very first request computes the figures itself, so they are real from the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crowdpatch.project import Project
from crowdpatch.server.progress import LiveMasks, pace, progress
from crowdpatch.server.tokens import local_completion_code

log = logging.getLogger(__name__)


def dashboard_figures(project: Project, live_masks: LiveMasks, invite_secret: str) -> dict[str, Any]:
    """Everything the dashboard shows: progress, pace and measured times, the worker-quality table, previews.

    Local workers carry the completion code they were given, so the requester can check it.
    """
    workers = live_masks.workers()
    for row in workers:
        if row["platform"] == "local":
            row["completion_code"] = local_completion_code(invite_secret, row["worker_row"])
    return {
        "progress": progress(project),
        "pace": pace(project),
        "workers": workers,
        "previews": live_masks.preview_images(),
    }


@dataclass(frozen=True)
class Figures:
    """One computation's result: never changed once made, so requests share it without a lock."""

    payload: dict[str, Any]
    as_of: float
    """Wall-clock time (epoch seconds) the computation began: the figures are at least this recent."""
    compute_seconds: float
    """How long the computation took."""


class FiguresSnapshot:
    """The last computed figures, refreshed in the background while someone asks for them."""

    def __init__(
        self,
        compute: Callable[[], dict[str, Any]],
        min_interval: float = 2.0,
        cost_factor: float = 4.0,
        idle_after: float = 60.0,
        name: str = "dashboard",
    ) -> None:
        self.compute = compute
        self.name = name
        """What the figures are, in the refreshing thread's name and the log."""
        self.min_interval = min_interval
        """The shortest time between two refreshes, however cheap they are."""
        self.cost_factor = cost_factor
        """A refresh waits this many times the last one's duration: 4 keeps refreshing to a fifth of one core."""
        self.idle_after = idle_after
        """Seconds without a request after which the thread ends."""
        self._latest: Figures | None = None
        self._last_cost = 0.0
        self._last_request = 0.0
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._state = threading.Lock()
        """Guards the fields above: the figures swapped in, the thread started or ending."""
        self._computing = threading.Lock()
        """Held for the whole of a computation: never two at once."""

    def current(self) -> dict[str, Any]:
        """The latest figures with their age; computed here only when there are none yet."""
        with self._state:
            self._last_request = time.monotonic()
            figures = self._latest
            if figures is not None:
                self._start_thread()
        if figures is None:
            figures = self._first()
        return self._answer(figures)

    def fresh(self) -> dict[str, Any]:
        """Figures computed now (a client that needs them exact); they become the latest too."""
        with self._computing:
            return self._answer(self._compute_now(), stale_seconds=0.0)

    @staticmethod
    def _answer(figures: Figures, stale_seconds: float | None = None) -> dict[str, Any]:
        if stale_seconds is None:
            stale_seconds = max(0.0, time.time() - figures.as_of)
        return {
            **figures.payload,
            "as_of": figures.as_of,
            "compute_seconds": figures.compute_seconds,
            "stale_seconds": stale_seconds,
        }

    def stop(self, timeout: float = 5.0) -> None:
        """End the refreshing thread (the app's shutdown); a later request starts a new one."""
        with self._state:
            thread, stop = self._thread, self._stop
            self._thread = self._stop = None
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def refreshing(self) -> bool:
        """Whether the background thread is running."""
        with self._state:
            return self._thread is not None and self._thread.is_alive()

    def _first(self) -> Figures:
        """Compute the first figures (a request that found none), unless a concurrent request just did."""
        with self._computing:
            figures = self._latest
            if figures is None:
                figures = self._compute_now()
        with self._state:
            self._start_thread()
        return figures

    def _compute_now(self) -> Figures:
        """Compute and swap in new figures (the caller holds ``_computing``); errors propagate."""
        as_of, started = time.time(), time.perf_counter()
        try:
            payload = self.compute()
        finally:
            cost = time.perf_counter() - started
            with self._state:
                self._last_cost = cost
        figures = Figures(payload, as_of, cost)
        with self._state:
            self._latest = figures
        return figures

    def _start_thread(self) -> None:
        """Start the refreshing thread unless it runs (the caller holds ``_state``)."""
        if self._thread is not None:
            return
        self._stop = threading.Event()
        name = f"crowdpatch-{self.name}"
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=name, daemon=True)
        self._thread.start()

    def _interval(self) -> float:
        with self._state:
            return max(self.min_interval, self.cost_factor * self._last_cost)

    def _run(self, stop: threading.Event) -> None:
        """Refresh at the adaptive interval until no request has come for ``idle_after`` seconds."""
        while not stop.wait(self._interval()):
            with self._state:
                if time.monotonic() - self._last_request > self.idle_after:
                    if self._stop is stop:  # ending here: the next request starts a new thread
                        self._thread = self._stop = None
                    return
            with self._computing:
                if stop.is_set():
                    return
                try:
                    self._compute_now()
                except Exception:
                    log.exception("%s figures could not be refreshed; the last ones are kept", self.name)
