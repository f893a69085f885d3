"""Records: sustained insert rate, console query p95 on a large database, size per million defects,
and crop disk cost per 1,000 defects.

- insert rate: pre-built worker messages (``--defects-per-frame`` defects each) written through
  `Store.apply_batch` in batches of ``--batch`` messages -- the recorder's own write path with
  idempotent inserts, row digests and the audit chain; also with `messages.decode` of the
  encoded parts included ("recorder path").
- large database: ``--defects`` defects in coils of ``--coil-defects`` each, spread over 60 days,
  each coil graded and its review queue filled; then each console query ``--queries`` times on
  random coils: p50 / p95 in ms.
- recorder over ZeroMQ (``recorder_zmq``): the recorder process's loop fed by another process,
  ``--insert-defects`` defects in coils of 10,000, each coil finalised; defects per second of wall
  clock and of the recorder's own CPU time (the steadier figure on a shared machine); with
  ``--zmq-crops`` every defect carries its PNG crop, as workers send them.
- crops: ``--crops`` defect crops with a 16 px margin from the hot-strip dataset's test split (or
  synthetic ones when the datasets are absent), stored content-addressed; bytes on disk per 1,000.

``--parts`` measures some of these only (e.g. ``--parts recorder_zmq``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from inspection.arguments import positive_float, positive_int
from inspection.records import analytics, line_reads, queries
from inspection.records.crops import CropStore
from inspection.records.db import checkpoint
from inspection.records.store import Store
from inspection.results import decode, encode
from inspection.testing.synthetic import coil_messages

PARTS = ("insert", "recorder_zmq", "large_db", "crops")
HELP = "records: insert defects/s, console query p95 on a large DB, DB size per million defects, crop cost"
CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]
DAY_NS = 86_400 * 10**9
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--defects", type=positive_int, default=2_000_000,
                        help="defects in the large database (the goal is 10,000,000; default 2,000,000)")
    parser.add_argument("--insert-defects", type=positive_int, default=300_000, help="defects for the insert-rate run")
    parser.add_argument("--defects-per-frame", type=positive_float, default=20.0, help="defects per worker message")
    parser.add_argument("--batch", type=positive_int, default=250, help="messages per transaction")
    parser.add_argument("--coil-defects", type=positive_int, default=5000, help="defects per coil in the large DB")
    parser.add_argument("--queries", type=positive_int, default=40, help="repetitions of each query")
    parser.add_argument("--crops", type=positive_int, default=1000, help="crops for the disk-cost figure")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, deleted after)")
    parser.add_argument("--existing-db", type=Path,
                        help="measure the queries on a large DB an earlier run built (with --dir) instead of building")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
                        help=f"which figures to measure (default all: {' '.join(PARTS)})")
    parser.add_argument("--signed", action="store_true",
                        help="recorder_zmq: results carry their camera's signature and the recorder verifies each "
                             "(as on a line with [security] curve = true)")
    parser.add_argument("--zmq-crops", action="store_true",
                        help="recorder_zmq: every defect with its PNG crop, staged and committed as workers send them")


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}
        parts = getattr(args, "parts", PARTS)
        if "insert" in parts:
            figures["insert"] = _insert_rate(work / "insert.db", args)
        if "recorder_zmq" in parts:
            figures["recorder_zmq"] = _recorder_rate(work / "recorder.db", args)
        if "large_db" in parts:
            figures["large_db"] = _large_db(work / "large.db", args)
        if "crops" in parts:
            figures["crops"] = _crop_cost(work / "crops", args.crops)
        figures["goals"] = {"insert_defects_per_s": 50_000, "query_p95_ms": 200, "defects_in_db": 10_000_000}
        if "large_db" in figures:
            figures["goals"]["measured_defects_in_db"] = figures["large_db"]["defects"]
        return figures


def _coil_batch(coil: str, defects: int, per_frame: float, start_ns: int, seed: int, crops: bool = False) -> list:
    frames = max(1, int(defects / per_frame / len(CAMERAS)))
    return coil_messages(coil, length_m=frames * 1.024, defects_per_frame=per_frame, seed=seed,
                         start_ns=start_ns, crops=crops)


def _insert_rate(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    store = Store(path)
    store.register_line("bench-1", "hot", 1600.0, CAMERAS)
    messages: list = []
    i = 0
    while sum(len(getattr(m, "defects", ())) for m in messages) < args.insert_defects:
        messages += _coil_batch(f"INS-{i}", 10_000, args.defects_per_frame, 1_763_900_000 * 10**9, i)
        i += 1
    n = sum(len(getattr(m, "defects", ())) for m in messages)
    half = len(messages) // 2
    t0 = time.perf_counter()
    for k in range(0, half, args.batch):
        store.apply_batch(messages[k:k + args.batch])
    applied = time.perf_counter() - t0
    n_first = sum(len(getattr(m, "defects", ())) for m in messages[:half])
    encoded = [encode(m) for m in messages[half:]]
    t1 = time.perf_counter()
    for k in range(0, len(encoded), args.batch):
        store.apply_batch([decode(p) for p in encoded[k:k + args.batch]])
    with_decode = time.perf_counter() - t1
    store.close()
    log.info("insert: %d defects", n)
    return {"defects": n, "defects_per_message": args.defects_per_frame,
            "messages_per_transaction": args.batch,
            "apply_batch_defects_per_s": round(n_first / applied),
            "recorder_path_defects_per_s": round((n - n_first) / with_decode),
            "note": "apply_batch: Store write path (idempotent inserts, digests, audit); recorder path adds "
                    "messages.decode of the encoded parts; ZeroMQ receive not included"}


def _push_coils(endpoint: str, coils: int, per_frame: float, crops: bool = False, keys_dir: Path | None = None) -> None:
    """Child process: build and encode the messages first (signed with the cameras' keys in
    `keys_dir`, if given), then push them as fast as ZeroMQ takes them."""
    import zmq

    from inspection.transport import open_socket, peer_endpoint

    messages = [m for c in range(coils) for m in _coil_batch(f"ZMQ-{c}", 10_000, per_frame, 1_763_900_000 * 10**9, c,
                                                             crops)]
    if keys_dir is not None:
        from inspection.keys import load_signing_key, sign_path
        from inspection.signing import Signer
        from inspection.testing.synthetic import signed

        messages = signed(messages, {c["id"]: Signer(load_signing_key(sign_path(keys_dir, c["id"])), c["id"])
                                     for c in CAMERAS})
    parts = [encode(m) for m in messages]
    sock = open_socket(zmq.Context.instance(), zmq.PUSH, peer_endpoint(endpoint), hwm=1000, linger_ms=60_000)
    for p in parts:
        sock.send_multipart(p)
    sock.close()


def _recorder_rate(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The recorder process's sustained rate: messages from another process over tcp loopback."""
    import multiprocessing

    from inspection.line.process import settle_gc
    from inspection.line.recorder import RecorderLoop

    crops = getattr(args, "zmq_crops", False)
    store = Store(path, crops=CropStore(path.parent / "recorder-crops") if crops else None)
    store.register_line("bench-1", "hot", 1600.0, CAMERAS)
    keys_dir, seals = None, None
    if getattr(args, "signed", False):
        from inspection import keys
        from inspection.records.seals import SealCheck

        keys_dir = path.parent / "keys"
        if not keys.has_sign_keys(keys_dir):
            keys.generate(keys_dir, [c["id"] for c in CAMERAS], curve=False)
        seals = SealCheck({c["id"]: keys.load_verify_key(keys.sign_public_path(keys.sign_path(keys_dir, c["id"])))
                           for c in CAMERAS})
    recorder = RecorderLoop(store, "tcp://127.0.0.1:*", "bench-1", batch_messages=args.batch, flush_ms=200,
                            grace_s=3600, seals=seals)
    endpoint = recorder.receiver.address  # the port ZeroMQ picked
    collector = gc.get_threshold()
    settle_gc()  # as the recorder process does once it is built (`inspection.line.recorder.main`)
    coils = max(1, args.insert_defects // 10_000)
    expected = sum(len(getattr(m, "defects", ())) for c in range(coils)
                   for m in _coil_batch(f"ZMQ-{c}", 10_000, args.defects_per_frame, 0, c))
    child = multiprocessing.get_context("spawn").Process(target=_push_coils,
                                                         args=(endpoint, coils, args.defects_per_frame, crops,
                                                               keys_dir))
    child.start()
    first = cpu = None
    phases_before: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while recorder.stats.new_defects < expected and time.monotonic() < deadline:
        recorder.poll(50)
        if first is None and recorder.stats.messages:
            first, cpu = time.perf_counter(), time.process_time()
            phases_before = dict(recorder.stats.cpu_s)
    recorder.flush()
    elapsed = time.perf_counter() - (first or time.perf_counter())
    # the recorder process's own CPU time over the same window (its threads included): on a shared
    # machine the steadier figure, since the wall clock also counts the time other jobs hold the cores
    cpu_s = time.process_time() - (cpu if cpu is not None else time.process_time())
    child.join(60)
    recorder.close()
    store.close()
    gc.unfreeze()  # the other parts of this run measure with the collector as they found it
    gc.set_threshold(*collector)
    finalise = recorder.stats.finalise_s
    phases = _cpu_phases(recorder.stats.cpu_s, phases_before, cpu_s)
    per_defect = {k: round(v / max(recorder.stats.new_defects, 1) * 1e6, 2) for k, v in phases.items()}
    return {"defects": recorder.stats.new_defects, "expected": expected, "coils": coils,
            "defects_per_coil": round(expected / coils), "seconds": round(elapsed, 2),
            "defects_per_s": round(recorder.stats.new_defects / elapsed) if elapsed else None,
            "finalise_s": round(finalise, 2), "finalise_s_per_coil": round(finalise / coils, 2),
            "defects_per_s_excluding_finalise": round(recorder.stats.new_defects / max(elapsed - finalise, 1e-6)),
            "cpu_s": round(cpu_s, 2), "defects_per_cpu_s": round(recorder.stats.new_defects / cpu_s) if cpu_s else None,
            "cpu_phases_s": {k: round(v, 3) for k, v in phases.items()},
            "cpu_us_per_defect": {**per_defect, "total": round(cpu_s / max(recorder.stats.new_defects, 1) * 1e6, 2)},
            "crops": crops, "alarms": recorder.stats.alarms, "signed": seals is not None,
            "refused": recorder.stats.refused_unsigned + recorder.stats.refused_bad_signature,
            "note": "Recorder.poll loop (receive, decode, batched apply_batch with the severe-defect alarms, and "
                    "at each coil end grading, roll-mark search and review queue) fed by another process over tcp "
                    "loopback; from the first message received to the last commit; cpu_s: the recorder "
                    "process's CPU time over that window; cpu_phases_s: the recording thread's CPU time per phase "
                    "(RecorderStats.cpu_s), 'other' the rest of the process (ZeroMQ's I/O thread, the poll loop)"}


def _cpu_phases(after: dict[str, float], before: dict[str, float], total: float) -> dict[str, float]:
    """CPU seconds per recorder phase over the measured window, and the rest of the process's as "other"."""
    phases = {k: v - before.get(k, 0.0) for k, v in sorted(after.items())}
    phases["other"] = total - sum(phases.values())
    return phases


def _large_db(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    rng = random.Random(0)
    start = 1_763_900_000 * 10**9 - 60 * DAY_NS
    if args.existing_db:  # measure the queries on a database built by an earlier run
        path = args.existing_db
        store = Store(path)
        build_s = None
        total = line_reads.last_defect_id(store.db)
        coil_ids = line_reads.coil_ids(store.db)
        start = queries._day_ns(line_reads.first_count_day(store.db))
    else:
        store = Store(path)
        store.register_line("bench-1", "hot", 1600.0, CAMERAS)
        n_coils = max(1, args.defects // args.coil_defects)
        t0, total = time.perf_counter(), 0
        for c in tqdm(range(n_coils), desc="building large DB", unit="coil", mininterval=5):
            coil = f"B-{c:06d}"
            result = store.apply_batch(_coil_batch(coil, args.coil_defects, args.defects_per_frame,
                                                   start + int(c / n_coils * 60 * DAY_NS), c))
            total += result.new_defects
            store.grade_coil(coil, "coil_end")
            store.enqueue_reviews(coil)
            for item in analytics.review_queue(store.db, coil=coil, limit=3):
                store.add_review(item["defect_id"], "bench", rng.choice(("confirm", "reject")))
        build_s = time.perf_counter() - t0
        coil_ids = [f"B-{c:06d}" for c in range(n_coils)]
    checkpoint(store.db)  # the file's size then holds everything written
    size = path.stat().st_size
    db = store.db
    coils = len(coil_ids)
    month = (queries.day_of(start + 20 * DAY_NS), queries.day_of(start + 50 * DAY_NS))
    probes = {
        "coil_defects": lambda: queries.coil_defects(db, rng.choice(coil_ids)),
        "coil_map": lambda: queries.coil_map(db, rng.choice(coil_ids)),
        "coverage": lambda: queries.coverage(db, rng.choice(coil_ids)),
        "review_queue_50": lambda: analytics.review_queue(db, limit=50),
        "pareto_month": lambda: analytics.pareto(db, *month),
        "coils_list_500": lambda: queries.coils(db, limit=500),
        "coils_filter_grade": lambda: queries.coils(db, grade="reject", limit=500),
        "defects_per_km_month": lambda: analytics.defects_per_km(db, "line", *month),
        "line_status": lambda: analytics.line_status(db),
    }
    timings = {}
    for name, probe in probes.items():
        samples = []
        for _ in range(args.queries):
            t = time.perf_counter()
            probe()
            samples.append((time.perf_counter() - t) * 1000)
        samples.sort()
        timings[name] = {"p50_ms": round(statistics.median(samples), 2),
                         "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2)}
    store.close()
    return {"defects": total, "coils": coils, "defects_per_coil": args.coil_defects,
            "build_s": round(build_s, 1) if build_s else "existing database",
            "build_defects_per_s_incl_grading": round(total / build_s) if build_s else None, "db_bytes": size,
            "db_mb_per_million_defects": round(size / max(total, 1) * 1e6 / 1e6, 1), "queries": timings,
            "size_note": "defects carry no crop reference here; a crop sha256 (64 hex chars) adds ~65 bytes "
                         "per defect (~65 MB per million)",
            "worst_p95_ms": max(t["p95_ms"] for t in timings.values())}


def _crop_cost(root: Path, count: int) -> dict[str, Any]:
    crops = CropStore(root)
    pngs, source = _real_crops(count)
    for png in pngs:
        crops.put(png)
    files = crops.files()
    apparent = sum(f.stat().st_size for f in files)
    on_disk = sum(f.stat().st_blocks * 512 for f in files)
    return {"crops": len(pngs), "unique_files": len(files), "source": source,
            "bytes_per_1000_defects": round(apparent / max(len(pngs), 1) * 1000),
            "disk_bytes_per_1000_defects": round(on_disk / max(len(pngs), 1) * 1000),
            "mean_crop_bytes": round(apparent / max(len(files), 1))}


def _real_crops(count: int, margin: int = 16) -> tuple[list[bytes], str]:
    import cv2
    import numpy as np

    from inspection.config import default_datasets_dir

    try:
        from inspection.datasets import load_split, read_image

        samples = load_split(default_datasets_dir(), "neu-det", "test")
    except Exception as exc:  # noqa: BLE001 - no datasets here: fall back, and say so in the figures
        from inspection.testing.synthetic import crop_png

        rng = np.random.default_rng(0)
        return [crop_png(rng, 64, 64) for _ in range(count)], f"synthetic (datasets unavailable: {exc})"
    pngs: list[bytes] = []
    for sample in samples:
        image = read_image(sample.image_path)
        for x1, y1, x2, y2 in sample.boxes.astype(int):
            crop = image[max(0, y1 - margin):y2 + margin, max(0, x1 - margin):x2 + margin]
            pngs.append(cv2.imencode(".png", np.ascontiguousarray(crop))[1].tobytes())
            if len(pngs) >= count:
                return pngs, "neu-det test split, box + 16 px margin, PNG"
    return pngs, "neu-det test split (all boxes), box + 16 px margin, PNG"
