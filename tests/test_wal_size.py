"""The write-ahead log of a served SQLite database stays within its share of the disk under a steady load.

A ``PASSIVE`` checkpoint lets the log start over, but its file keeps the largest size it ever had:
under continuous writes that is several MB, and on a small disk the log alone filled it (the
server then could not even checkpoint, the database file having no room to take the log back).
The checkpoint thread truncates the log's file once it outgrows a quarter of the room it could
take. The free space is given to the thread here (a disk of a few MB), so no mount is needed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from sqlalchemy import text

from crowdpatch.store.checkpoints import Checkpointer
from crowdpatch.store.db import make_engine
from crowdpatch.store.writer_lock import WriterLock

FREE_BYTES = 4 * 2**20
"""The disk the thread is told of: the log's file may take (4 MB + its size) / 4 before it is truncated."""


def test_the_log_file_is_truncated_under_continuous_writes_and_reads(tmp_path):
    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)"))
    checkpointer = Checkpointer(engine, free_space=lambda _path: FREE_BYTES)
    stop = threading.Event()
    writes = [0]
    reads = [0]

    def write() -> None:  # as the server's writer does: the writer lock, then BEGIN IMMEDIATE
        lock = WriterLock(str(path))
        with engine.connect() as connection:
            while not stop.is_set():
                with lock:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    connection.execute(text("INSERT INTO t (blob) VALUES (randomblob(8000))"))
                    connection.execute(text("DELETE FROM t WHERE id < (SELECT max(id) FROM t) - 50"))
                    connection.commit()
                writes[0] += 1

    def read() -> None:  # a reader always somewhere in a read transaction
        with engine.connect() as connection:
            while not stop.is_set():
                with connection.begin():
                    connection.execute(text("SELECT count(*), sum(length(blob)) FROM t")).one()
                reads[0] += 1

    threads = [threading.Thread(target=write), threading.Thread(target=read), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    wal = f"{path}-wal"
    grew, shrank = False, False
    try:
        deadline = time.monotonic() + 120  # a bound on a hung test, not a measurement
        while not shrank and time.monotonic() < deadline:
            size = os.stat(wal).st_size if os.path.exists(wal) else 0
            budget = checkpointer.log_budget(size)
            grew = grew or size > budget
            shrank = grew and size < budget // 2 and all(thread.is_alive() for thread in threads)
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        checkpointer.stop()
        engine.dispose()
    assert grew, "the writes never outgrew the log's budget: the test proves nothing"
    assert shrank, f"the log's file kept its largest size ({writes[0]} writes, {reads[0]} reads)"
    assert checkpointer.truncations >= 1 and checkpointer.errors == 0
    assert writes[0] > 0 and reads[0] > 0


def test_a_read_holding_an_old_snapshot_delays_the_truncation_until_it_ends(tmp_path):
    # A long read (an export) keeps the log from being emptied; the thread gives up after a short wait
    # instead of holding the writers up for the whole read, and empties the log once the read ends.
    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, blob BLOB)"))
    reader = sqlite3.connect(path)  # a plain connection: pysqlite would run a lone SELECT outside a transaction
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # its snapshot: before every write below
    with engine.begin() as connection:
        for _ in range(200):
            connection.execute(text("INSERT INTO t (blob) VALUES (randomblob(8000))"))
    checkpointer = Checkpointer(engine, free_space=lambda _path: FREE_BYTES)
    try:
        deadline = time.monotonic() + 60  # a bound on a hung test, not a measurement
        while checkpointer.checkpoints < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints >= 3 and checkpointer.truncations == 0 and checkpointer.alive
        with engine.begin() as connection:  # the writers are not kept waiting meanwhile
            connection.execute(text("INSERT INTO t (blob) VALUES (x'00')"))
        reader.rollback()
        while checkpointer.truncations == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.truncations >= 1 and checkpointer.errors == 0
        assert os.stat(f"{path}-wal").st_size < FREE_BYTES // 4
    finally:
        reader.close()
        checkpointer.stop()
        engine.dispose()
