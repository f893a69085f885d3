"""The PLC publisher's sequence numbers and epochs, kept in the line database (`plc.SequenceLedger`).

A PLC tells lost messages by a jump in a topic's ``seq``. A recorder that `run` restarted after a
crash used to number from 1 again, which a PLC could not tell from a replay of old messages. Here
each start of a publisher gets a new ``epoch`` (a row of ``plc_publishers``, AUTOINCREMENT: never
handed out twice) and resumes every topic's ``seq`` after the last one its predecessor numbered.

The publisher writes the last ``seq`` of a burst of messages *before* it sends them (`save`, one
commit per burst, not per message: a commit costs about 0.5 ms here). So a ``seq`` is never sent
twice: a crash between the write and the send leaves numbers that were never sent, which the PLC
sees as a gap -- true, those messages are missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from sqlite_utils import Database

from inspection.records.db import write_transaction


class PlcSequence:
    """`plc.SequenceLedger` on a line database opened for writing (the recorder's connection)."""

    def __init__(self, db: Database, clock: Callable[[], int] = time.time_ns) -> None:
        self.db, self.clock = db, clock
        self.line: str | None = None
        self.epoch: int | None = None

    def resume(self, line: str, process: str) -> tuple[int, dict[str, int]]:
        """A new epoch for `line`'s publisher, and the last seq numbered per topic (empty: none yet)."""
        with write_transaction(self.db):
            cursor = self.db.execute(
                "INSERT INTO plc_publishers (line, process, pid, started_ns) VALUES (?,?,?,?)",
                (line, process, os.getpid(), self.clock()))
            epoch = int(cursor.lastrowid)
            last = {str(topic): int(seq) for topic, seq in self.db.execute(
                "SELECT topic, seq FROM plc_sequence WHERE line = ?", (line,)).fetchall()}
        self.line, self.epoch = line, epoch
        return epoch, last

    def save(self, last: Mapping[str, int]) -> None:
        """Note the last seq numbered per topic (before those messages are sent); never lowers one."""
        if self.line is None or self.epoch is None:
            raise RuntimeError("PlcSequence.save before resume")
        now = self.clock()
        with write_transaction(self.db):
            self.db.conn.executemany(
                "INSERT INTO plc_sequence (line, topic, seq, epoch, updated_ns) VALUES (?,?,?,?,?) "
                "ON CONFLICT (line, topic) DO UPDATE SET seq = excluded.seq, epoch = excluded.epoch, "
                "updated_ns = excluded.updated_ns WHERE excluded.seq > plc_sequence.seq",
                [(self.line, topic, int(seq), self.epoch, now) for topic, seq in sorted(last.items())])


def epochs(db: Database, line: str) -> list[dict[str, object]]:
    """The publisher starts of `line`, oldest first (epoch, process, pid, started_ns)."""
    if not db["plc_publishers"].exists():
        return []
    rows = db.execute("SELECT epoch, process, pid, started_ns FROM plc_publishers WHERE line = ? ORDER BY epoch",
                      (line,)).fetchall()
    return [{"epoch": e, "process": p, "pid": pid, "started_ns": t} for e, p, pid, t in rows]
