"""PostgreSQL: the lease table vacuumed every second while serving, so dead leases never pile up.

Every answer deletes its lease and inserts the worker's next one: one dead row per answer in a table
that holds a few dozen live ones (one or two per worker). Autovacuum visits a database at most once
per ``autovacuum_naptime`` (a minute by default), so under a steady load the lease heap holds tens of
thousands of dead rows between two visits. The planner sees a table of a few dozen rows and reads it
by sequential scans (several in each answer's statements), and each of them passes every dead row: the
answer path's cost grows all minute long (docs/serving.md, "Dead leases between vacuums"; docs/benchmarks.md,
"The lease table vacuumed while serving").

Each serving process vacuums the lease table once a second, on a thread of its own, with
``SKIP_LOCKED``: a vacuum already running (another process's, autovacuum's) is not waited for, and a
table with a few hundred dead rows takes a few milliseconds. Vacuuming takes the table's owner (the
role that ran the migrations); for another role PostgreSQL skips the table with a warning, and dead
leases are then left to autovacuum as before. A vacuum that fails (a lost connection, the database
restarting) is tried again at doubling intervals, and the log says when vacuums fail and when they
work again, once each.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text

from crowdpatch.store.db import backend_of
from crowdpatch.store.maintenance import MaintenanceThread

INTERVAL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
"""Longest wait between two tries of a failing vacuum."""
VACUUM_LEASES = text("VACUUM (SKIP_LOCKED) lease")

log = logging.getLogger(__name__)


class LeaseVacuum(MaintenanceThread):
    """Vacuums the lease table every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, engine: Engine, interval: float = INTERVAL_SECONDS):
        super().__init__("crowdpatch-lease-vacuum")
        self.engine = engine
        self.interval = interval
        self.vacuums = 0
        self.errors = 0
        self.failing: str | None = None
        """The last vacuum's error while they fail; None while they work."""
        self._start()

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            try:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    connection.execute(VACUUM_LEASES)
            except Exception as exc:  # noqa: BLE001 - a thread that died would leave dead leases to pile up again
                if self.failing is None:
                    log.warning("vacuuming the lease table fails: %s; trying again", exc)
                self.failing = str(exc)
                self.errors += 1
                wait = min(2 * wait, MAX_BACKOFF_SECONDS)
                continue
            if self.failing is not None:
                log.warning("vacuuming the lease table works again")
                self.failing = None
            self.vacuums += 1
            wait = self.interval


def lease_vacuum_for(engine: Engine) -> LeaseVacuum | None:
    """A lease-vacuum thread for a PostgreSQL database; None for SQLite (which deletes rows in place)."""
    if backend_of(engine) != "postgresql":
        return None
    return LeaseVacuum(engine)
