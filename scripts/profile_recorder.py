"""Where the recorder's CPU time goes, per defect: the README's breakdown of the write path and the
coil finalisation ("Known gaps", recorder insert rate).

    .venv/bin/python scripts/profile_recorder.py [--coils N] [--batch N]

`bench records`' messages (coils of 10,000 defects, 20 per frame) are encoded, then decoded and
recorded in this process by `Recorder` in batches, with the garbage collector settled as in the
recorder process; no sockets, so the figures are the recording thread's alone. Each function below
is wrapped to add up its thread CPU time (`time.thread_time`): nested calls are counted in both.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from inspection.benchmarks.records import CAMERAS, _coil_batch
from inspection.line.process import settle_gc
from inspection.records import batch_rows, coil_rows, line_reads, queries, recorder, review_queue, seams, store
from inspection.records.recorder import Recorder
from inspection.records.store import Store
from inspection.results import decode, encode

TIMES: Counter[str] = Counter()
WRAPPED = [  # (owner, attribute): the calls the README's breakdown names (those a tree lacks are left out)
    (store.Store, "apply_batch"), (store.Store, "_new_rows"), (seams, "link_new_defects"),
    (store.Store, "_count_classes"), (store.Store, "add_alarms"), (recorder.Recorder, "_severe_alarms"),
    (recorder.Recorder, "_emit_recorded"), (queries, "coil_defects"), (queries, "lean_coil_defects"),
    (recorder, "find_periodic"), (store.Store, "grade_coil"), (store, "grade"), (store.Store, "enqueue_reviews"),
    (review_queue, "pick_for_review"), (line_reads, "class_counts"), (batch_rows, "as_stored"),
    (coil_rows.CoilRows, "add"), (coil_rows.CoilRows, "rows"),
]


def _timed(owner: Any, name: str) -> None:
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[name] += time.thread_time() - started

    setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coils", type=int, default=5, help="coils of 10,000 defects (default 5)")
    parser.add_argument("--batch", type=int, default=250, help="messages per transaction (default 250)")
    args = parser.parse_args()
    for owner, name in WRAPPED:
        if hasattr(owner, name):
            _timed(owner, name)
    messages = [m for c in range(args.coils) for m in _coil_batch(f"P-{c}", 10_000, 20.0, 1_763_900_000 * 10**9, c)]
    parts = [encode(m) for m in messages]
    defects = sum(len(getattr(m, "defects", ())) for m in messages)
    with tempfile.TemporaryDirectory() as tmp:
        db = Store(Path(tmp) / "profile.db")
        db.register_line("bench-1", "hot", 1600.0, CAMERAS)
        rec = Recorder(db, "bench-1", batch_messages=args.batch, flush_ms=200, grace_s=3600)
        settle_gc()
        started = time.thread_time()
        for k in range(0, len(parts), args.batch):
            decoding = time.thread_time()
            batch = [decode(p) for p in parts[k:k + args.batch]]
            rec.stats.charge("decode", decoding)
            rec.add(batch)
            rec.flush()
        total = time.thread_time() - started
        db.close()

    def per_defect(seconds: float) -> float:
        return round(seconds / defects * 1e6, 2)

    print(f"{defects} defects, {per_defect(total)} us of thread CPU per defect")
    print("phases (us per defect):", {k: per_defect(v) for k, v in sorted(rec.stats.cpu_s.items())})
    print("calls (us per defect):", {k: per_defect(v) for k, v in TIMES.most_common()})


if __name__ == "__main__":
    main()
