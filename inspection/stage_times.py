"""Where the time from capture to the PLC goes: per-defect stage times, and their breakdown.

A frame's way through the line, each step stamped with CLOCK_REALTIME (``time.time_ns``) by the
process that does it:

- ``captured_ns`` (camera): when the frame's **last line** was captured, i.e. the first moment the
  frame exists and could be sent. A line-scan frame of H lines at a line period t covers H x t of
  strip, so its first line is (H - 1) x t older than that: shorter frames cut that wait, which no
  stage below shows (``frame_period_ms`` in `bench inference` says how long it is).
- ``recv_ns``, ``infer_start_ns``, ``infer_end_ns``, ``sent_ns`` (worker, carried in the result's
  ``timing``, `inspection.results.WorkerTiming`).
- ``recorder_recv_ns`` (the recorder took the result off its socket), ``flush_ns`` (its batch's
  write began), ``commit_ns`` (the batch's transaction committed), ``published_ns`` (the defect's PLC
  message was handed to the PUB socket) (recorder, `StageLog`).
- the arrival at the PLC subscriber (`inspection.plc_tap`, in the benchmark).

Differences of clocks of different processes are valid on one host (all the benchmarks run there);
a line whose processes run on several hosts needs their clocks synchronised (PTP, or NTP for
figures of milliseconds) for this breakdown; nothing in the line depends on it.

`StageLog` is off unless ``[records] stage_log`` names a file: then the recorder appends one JSON
line per published defect (a benchmark's scratch file; a few hundred bytes per defect).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# (name, start stamp, end stamp, what it holds); consecutive, so the stages add up to the total
STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("camera_to_worker", "captured_ns", "recv_ns",
     "camera encode and send queue, transport, the worker's receive queue (frames waiting while it is busy)"),
    ("worker_batching", "recv_ns", "infer_start_ns", "waiting for the batch to fill (batch_size / max_wait_ms)"),
    ("inference", "infer_start_ns", "infer_end_ns",
     "the model run of the frame's whole batch: first stage, windows, merge, crops"),
    ("worker_send", "infer_end_ns", "sent_ns", "results of the batch sent before this one"),
    ("worker_to_recorder", "sent_ns", "recorder_recv_ns",
     "encode, transport, the recorder's receive queue (while it commits or does housekeeping)"),
    ("recorder_wait", "recorder_recv_ns", "flush_ns", "waiting in the recorder's batch (flush_ms / batch size)"),
    ("commit", "flush_ns", "commit_ns", "the batch's transaction: inserts, crops, alarms, commit"),
    ("publish", "commit_ns", "published_ns",
     "from the commit to the PUB socket: events, coil work of the same flush, sequence ledger, send"),
    ("plc_transport", "published_ns", "arrived_ns", "PUB -> subscriber"),
)
STAMPS = ("captured_ns", "recv_ns", "infer_start_ns", "infer_end_ns", "sent_ns", "recorder_recv_ns", "flush_ns",
          "commit_ns", "published_ns")
MAX_PENDING = 100_000  # frames remembered between receipt and commit: bounded, whatever arrives
BASIS = ("capture = the time the frame's last line was captured (the first moment it can be sent; its first line "
         "is a frame period older); arrival = the PLC subscriber's receipt of the defect message; each stage is "
         "the difference of two CLOCK_REALTIME stamps taken by the process doing it (one host: valid; several "
         "hosts need PTP/NTP-synchronised clocks); stages are consecutive, so per defect they add up to the total")


class StageLog:
    """The recorder's stamps, joined per defect and appended to a JSON-lines file (see the module)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")
        self._received: dict[tuple[str, int], dict[str, int]] = {}  # (camera, seq) -> stamps so far
        self._committed: dict[tuple[str, int], dict[str, int]] = {}
        self._emitted: list[dict[str, Any]] = []

    def received(self, messages: Iterable[Any]) -> None:
        """Results just taken off the recorder's socket (those without the worker's timing are skipped)."""
        now = time.time_ns()
        for m in messages:
            timing = getattr(m, "timing", None)
            if timing is None:
                continue
            if len(self._received) >= MAX_PENDING:  # never written (a lost batch): forget the oldest
                self._received.pop(next(iter(self._received)))
            self._received[(m.source.camera, m.seq)] = {"captured_ns": m.captured_ns, **timing.as_dict(),
                                                        "recorder_recv_ns": now}

    def committed(self, messages: Iterable[Any], flush_ns: int, commit_ns: int | None = None) -> None:
        """The batch holding `messages`, whose write began at `flush_ns`, has committed (now, or `commit_ns`)."""
        commit_ns = time.time_ns() if commit_ns is None else commit_ns
        for m in messages:
            stamps = self._received.pop((getattr(getattr(m, "source", None), "camera", None),
                                         getattr(m, "seq", None)), None)
            if stamps is not None:
                self._committed[(m.source.camera, m.seq)] = {**stamps, "flush_ns": flush_ns, "commit_ns": commit_ns}

    def emitted(self, row: Mapping[str, Any]) -> None:
        """A new defect row's event went to the outputs (sent at once, or with its burst: `sent`)."""
        stamps = self._committed.get((row.get("camera"), row.get("frame_seq")))  # type: ignore[arg-type]
        if stamps is not None:
            self._emitted.append({"defect_id": row["id"], "coil": row.get("coil"), "camera": row.get("camera"),
                                  "frame_index": row.get("frame_index"), **stamps})

    def sent(self, at_ns: int | None = None) -> None:
        """The PLC messages of the defects emitted so far were handed to the socket at `at_ns` (None:
        now, for messages sent as they were emitted): stamp and write them."""
        if self._emitted:
            now = time.time_ns() if at_ns is None else at_ns
            self._file.write("".join(json.dumps({**d, "published_ns": now}) + "\n" for d in self._emitted))
            self._file.flush()
            self._emitted = []
        self._committed.clear()

    def close(self) -> None:
        self.sent()
        self._file.close()


def read(path: str | Path) -> list[dict[str, Any]]:
    """The rows a `StageLog` wrote (none when the file is missing)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def breakdown(rows: Sequence[Mapping[str, Any]], arrivals_ns: Mapping[int, int]) -> dict[str, Any]:
    """Per stage mean, p50 and p99 (ms) over the defects that reached the subscriber (`arrivals_ns`:
    defect id -> arrival), and the same for the total capture -> arrival. The means add up to the
    total's mean exactly; p50s and p99s of stages need not (each is another defect's)."""
    joined = [{**r, "arrived_ns": arrivals_ns[r["defect_id"]]} for r in rows if r.get("defect_id") in arrivals_ns]
    if not joined:
        return {"defects": 0, "basis": BASIS}
    out: dict[str, Any] = {"defects": len(joined), "basis": BASIS, "stages": {}}
    exact_means = []  # summed before rounding: nine means rounded to 0.1 ms each could be 0.45 ms off
    for name, start, end, what in STAGES:
        values = [(r[end] - r[start]) / 1e6 for r in joined]
        exact_means.append(sum(values) / len(values))
        out["stages"][name] = {**_summary(values), "from": start, "to": end, "what": what}
    total = [(r["arrived_ns"] - r["captured_ns"]) / 1e6 for r in joined]
    out["total"] = _summary(total)
    out["sum_of_stage_means_ms"] = round(sum(exact_means), 1)
    out["sum_of_stage_p50s_ms"] = round(sum(s["p50"] for s in out["stages"].values()), 1)
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    return {"mean": round(float(np.mean(values)), 1), "p50": round(float(np.percentile(values, 50)), 1),
            "p99": round(float(np.percentile(values, 99)), 1)}


def table(breakdown_: Mapping[str, Any], title: str = "") -> str:
    """The breakdown as a few readable lines (stage, mean, p50, p99 in ms)."""
    if not breakdown_.get("defects"):
        return f"{title}: no defect reached the PLC subscriber with stage times"
    lines = [f"{title} ({breakdown_['defects']} defects)", f"  {'stage':<20}{'mean':>8}{'p50':>8}{'p99':>8}  ms"]
    for name, s in breakdown_["stages"].items():
        lines.append(f"  {name:<20}{s['mean']:>8.1f}{s['p50']:>8.1f}{s['p99']:>8.1f}")
    t = breakdown_["total"]
    lines.append(f"  {'capture -> PLC':<20}{t['mean']:>8.1f}{t['p50']:>8.1f}{t['p99']:>8.1f}")
    lines.append(f"  {'sum of stages':<20}{breakdown_['sum_of_stage_means_ms']:>8.1f}"
                 f"{breakdown_['sum_of_stage_p50s_ms']:>8.1f}")
    return "\n".join(lines)
