"""The figures of a run of the line (`steel-inspect run`'s JSON summary), from what each child
process reported at its end and from the line's database."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def merged(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of a child's incarnations added up (a restarted recorder starts its counts at 0)."""
    out: dict[str, Any] = {}
    for one in stats:
        for key, value in one.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            elif isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def summarize(db: Path, started_ns: int, codes: dict[str, int | None], cameras: dict[str, dict[str, Any]],
              workers: list[dict[str, Any]], recorder: dict[str, Any], restarts: dict[str, Any],
              elapsed: float) -> dict[str, Any]:
    """The run's figures: what was sent, received, inspected, dropped and lost, and how fast.

    Counts of what was recorded come from the database (frames captured since the run started),
    so they stay true when a worker died without reporting; the workers' own counts are kept
    beside them. Every frame a camera sent is inspected, dropped by a worker (recorded as such) or
    lost: ``frames_lost`` = sent - inspected - dropped by workers, the frames no record shows (held
    by a process that died, or malformed on the wire); ``frames_lost_by_coil`` says the same coil by
    coil from each camera's own count in its coil_end (`queries.coverage`), so the two agree unless
    a coil_end itself was lost (``coil_ends_missing``).
    """
    megapixels = sum(float(c.get("megapixels", 0.0)) for c in cameras.values())
    counts = restarts.get("restarts", {})
    summary: dict[str, Any] = {
        "exit_codes": codes,
        "worker_restarts": sum(n for name, n in counts.items() if name.startswith("worker-")),
        "recorder_restarts": counts.get("recorder", 0),
        "camera_restarts": sum(n for name, n in counts.items() if name.startswith("camera-")),
        **restarts,
        "frames_sent": sum(int(c.get("sent", 0)) for c in cameras.values()),
        "frames_dropped_by_cameras": sum(int(c.get("dropped", 0)) for c in cameras.values()),
        "workers_reported": {
            "frames_received": sum(int(w.get("frames_received", 0)) for w in workers),
            "frames_inspected": sum(int(w.get("frames_inspected", 0)) for w in workers),
            "frames_failed": sum(int(w.get("frames_failed", 0)) for w in workers),
            "malformed": sum(int(w.get("malformed", 0)) for w in workers),
            "tiles_inspected_share": _share(workers),
            "model_px_share": _share(workers, "model_px", "frame_px"),
        },
        "seconds": round(elapsed, 2),
        "megapixels_sent": round(megapixels, 2),
        "throughput_mpx_per_s": round(megapixels / elapsed, 2) if elapsed > 0 else None,
        "recorder": {k: recorder.get(k) for k in ("messages", "rejected", "new_defects", "coils_graded", "alarms",
                                                  "crops_failed")},
        "database": str(db),
    }
    if not db.is_file():
        return summary
    from inspection.records import line_reads
    from inspection.records.db import open_db

    reader = open_db(db, readonly=True)
    try:
        recorded = line_reads.run_summary(reader, started_ns)
    finally:
        reader.close()
    latencies = recorded.pop("latencies_ms")
    summary.update(recorded)
    summary["frames_lost"] = (summary["frames_sent"] - recorded["frames_inspected"]
                              - recorded["frames_dropped_by_workers"])
    summary["latency_ms_capture_to_record"] = _percentiles(latencies)
    return summary


def _share(workers: list[dict[str, Any]], part: str = "tiles_inspected", whole: str = "tiles_total") -> float | None:
    """Summed `part` / summed `whole` of the workers' stats: tiles (or windows) the model saw per grid
    tile, or pixels the model saw per frame pixel (above 1 when overlapping tiles see pixels twice)."""
    total = sum(int(w.get(whole, 0)) for w in workers)
    return round(sum(int(w.get(part, 0)) for w in workers) / total, 4) if total else None


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": round(values[-1], 2),
            "n": len(values)}
