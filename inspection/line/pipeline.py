"""The line pipeline: camera, worker and recorder processes, supervised.

Topology (roles from the config): each camera binds its PUSH endpoint; every worker connects
a PULL socket to all cameras (ZeroMQ shares the frames among workers) and PUSHes results to
the recorder, which binds `endpoints.results` and publishes to PLCs on `endpoints.plc`.

Children are started with plain arguments and read the config themselves (`inspection.line`:
camera, worker, recorder, each one `main`). Each writes a JSON summary of what it did when it
ends, which `run_pipeline` adds up. A camera, a worker or the recorder that dies while the line runs
is restarted (at once, then with a growing delay; given up on after too many restarts, see
`inspection.line.restarts`); each crash and restart is logged and counted in the summary. A restarted
camera resumes with the next coil and the frames left of `max_frames` (`camera_runs`).

What a dead process held is counted, never silently gone. A worker's queued frames are lost with
it; the recorder loses the batch it had not committed and what its socket had queued. Results the
workers send while the recorder is down are not lost: the recorder binds and the workers connect,
so each worker's PUSH socket keeps up to ``worker.results_hwm`` results for the recorder that comes
back, then blocks (the worker stops taking frames and live cameras count drops). Every coil_end
carries the camera's own frame count, so the recorder counts the frames in no record per coil
(``lost`` in `queries.coverage`, ``frames_lost`` in the hold alarm) and such a coil is held, never
graded prime; the summary's ``frames_lost`` is frames sent - inspected - dropped. A killed camera
loses the frames queued in its socket and its coil's coil_end: that coil is held; what it sent is
counted from its tally, which outlives it (`tally`).

Every link runs CURVE unless the config turns it off: on a first start (a key folder without keys)
`run_pipeline` makes the line's keys, and a key file missing later stops the line before anything
starts (`inspection.security.ensure_keys`); each child reads the keys of its own side.

A line starts only when every endpoint it binds is free (`transport.check_bindable`): otherwise
one error names the endpoint and nothing starts. A worker of a line whose camera could not bind
would connect to whoever holds that port (another line) and take its frames. A camera, the recorder,
or every worker, given up on stops the whole line (`failed` in the summary).

Shutdown order: cameras end (after `max_frames`, or on SIGTERM) with a coil_end each; then
workers drain until their sockets stay quiet for `drain_s` and exit; then the recorder
drains, flushes, grades what is complete and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from inspection.config import LineConfig
from inspection.errors import SteelInspectError, TransportError, write_problem
from inspection.line.camera_runs import CameraRuns
from inspection.line.process import StopFlag
from inspection.line.restarts import RestartPolicy, Restarts
from inspection.line.run_summary import merged, summarize
from inspection.line.supervisor import Supervisor
from inspection.records.errors import StoreError
from inspection.security import ensure_keys
from inspection.transport import Endpoint, check_bindable, parse_endpoint

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _error_reported(summary_path: str) -> Iterator[None]:
    """A child's `SteelInspectError` also goes to ``<summary>.error``: the supervisor sees only exit
    status 2, and a line that does not start raises the first such error (`run_pipeline`)."""
    try:
        yield
    except SteelInspectError as exc:
        with contextlib.suppress(OSError):
            Path(summary_path).with_suffix(".error").write_text(f"{exc}", encoding="utf-8")
        raise


def camera_child(config_path: str, config_overrides: dict[str, Any], camera_id: str, summary_path: str,
                 **overrides: Any) -> int:
    from inspection.line.camera import main

    with _error_reported(summary_path):
        main(config_path, camera_id, config_overrides=config_overrides, summary_path=summary_path, **overrides)
    return 0


def worker_child(config_path: str, config_overrides: dict[str, Any], name: str, summary_path: str,
                 ready_path: str | None = None, drain_s: float = 1.0) -> int:
    from inspection.line.worker import main

    with _error_reported(summary_path):
        return main(config_path, config_overrides, name, summary_path, ready_path, drain_s)


def recorder_child(config_path: str, config_overrides: dict[str, Any], db: str | None, summary_path: str) -> int:
    """The recorder with the whole line: coils cut short when the line stops are graded (held) at once."""
    from inspection.line.recorder import main

    with _error_reported(summary_path):
        main(config_path, config_overrides, db=db, summary_path=summary_path, finalise_on_stop=True)
    return 0


def bound_endpoints(config: LineConfig) -> list[Endpoint]:
    """Every endpoint the line's own processes bind: the cameras', the results' and the PLC's."""
    specs = [*(c.endpoint for c in config.cameras), config.endpoints.results, config.endpoints.plc]
    return [e for e in (parse_endpoint(spec, "bind") for spec in specs) if e.role == "bind"]


def run_pipeline(
    config: LineConfig,
    *,
    db: Path | None = None,
    workers: int = 1,
    max_frames: int | None = None,
    camera_overrides: dict[str, Any] | None = None,
    stop: StopFlag | None = None,
    verbose: bool = False,
    restart_policy: RestartPolicy | None = None,
) -> dict[str, Any]:
    """Run the line until the cameras end (`max_frames`) or `stop`; return the JSON summary.

    A worker or the recorder that dies while the line runs is restarted under `restart_policy`
    (`inspection.line.restarts`): logged, counted in the summary (``restarts``, ``crashes``). When the
    recorder is given up on, or every worker, the line stops (``failed``)."""
    stop = stop or StopFlag()
    db = Path(db or config.database)
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{db}: cannot create the database: {write_problem(db, exc)}") from None
    try:
        check_bindable(bound_endpoints(config))
    except TransportError as exc:
        raise TransportError(f"line {config.id} does not start: {exc} (another line or process holds it)") from None
    ensure_keys(config)  # a first start makes the line's CURVE keys; a missing one stops it here
    first_coil = next_coil_number(db, config.type)
    if first_coil is not None:  # the database holds this line's coils: continue after them
        camera_overrides = {"first_coil": first_coil, **(camera_overrides or {})}
        log.info("the database holds earlier coils: new coils are numbered from %d", first_coil)
    restarts = Restarts(restart_policy)
    started, started_ns = time.monotonic(), time.time_ns()
    with tempfile.TemporaryDirectory(prefix="steel-run-") as tmp, Supervisor(verbose=verbose) as sup:
        runs = [CameraRuns(Path(tmp), cam.id, max_frames, camera_overrides or {}) for cam in config.cameras]
        line = _Children(sup, config, Path(tmp), db, [f"worker-{i + 1}" for i in range(workers)], runs)
        line.start("recorder")
        for name in line.workers:
            line.start(name)
        if not _wait_ready(sup, [line.ready(name) for name in line.workers], ["recorder", *line.workers], stop):
            codes = sup.stop()
            errors = sorted(line.out.glob("*.error"))
            if errors:  # a child refused its input: the line cannot start, say why in one line
                raise SteelInspectError(f"line {config.id} did not start: {errors[0].stem.split('.')[0]}: "
                                        f"{errors[0].read_text(encoding='utf-8')}")
            log.error("the line did not start: a worker failed or was stopped before its model was loaded")
            return {"exit_codes": codes, "worker_restarts": 0, "recorder_restarts": 0, "started": False}
        cameras = [run.name for run in runs]
        for name in cameras:
            line.start(name)
        log.info("line %s running: %s", config.id, ", ".join(sup.names))
        failed: str | None = None
        while not stop.is_set():
            # alive before the watch: a camera that dies meanwhile is noted (and restarted) next round
            sending = any(sup.alive(c) for c in cameras)
            failed = line.watch(restarts, stop.is_set)
            if failed:  # a process given up on: the line stops as a whole
                log.error("%s exited with status %s: stopping the line", failed, sup.exit_codes()[failed])
                break
            if not (sending or any(restarts.scheduled(c) for c in cameras)):
                break
            time.sleep(0.2)
        codes = sup.stop(cameras)
        if not failed:
            # A recorder that died as the cameras ended (or waits for its restart) must come back to
            # record what the workers still hold and to grade the last coils.
            failed = line.watch(restarts, stop.is_set, final=True)
        codes |= sup.stop(line.workers, grace_s=60.0)
        codes |= sup.stop(["recorder"], grace_s=60.0)
        elapsed = time.monotonic() - started
        camera_stats = {run.name: run.stats() for run in runs}
        worker_stats = [s for p in sorted(line.out.glob("worker-*.json")) if (s := _read_json(p))]
        recorder_stats = merged([s for p in sorted(line.out.glob("recorder.*.json")) if (s := _read_json(p))])
    summary = summarize(db, started_ns, codes, camera_stats, worker_stats, recorder_stats, restarts.summary(),
                        elapsed)
    summary["curve"] = config.security.curve
    if config.security.curve:  # clients refused for unknown keys, per process (`inspection.curve`)
        refused = {name: int(stats.get("curve_refused", 0)) for name, stats in camera_stats.items()}
        refused["workers"] = sum(int(w.get("curve_refused", 0)) for w in worker_stats)
        refused["recorder"] = int(recorder_stats.get("curve_refused", 0))
        summary["curve_refused"] = refused
    if failed:
        summary["failed"] = failed
    return summary


class _Children:
    """The line's restartable children (cameras, workers, the recorder): each start of one is an
    incarnation with its own summary file, so a restart never overwrites what the one before wrote."""

    def __init__(self, sup: Supervisor, config: LineConfig, out: Path, db: Path, workers: list[str],
                 cameras: list[CameraRuns]) -> None:
        self.sup, self.config, self.out, self.db = sup, config, out, db
        self.workers = workers
        self.cameras = {run.name: run for run in cameras}
        self.finished: set[str] = set()  # cameras that died with nothing left to send: not restarted
        self.incarnation = dict.fromkeys(["recorder", *workers], 0)

    def ready(self, name: str) -> Path:
        return self.out / f"{name}.ready"

    def start(self, name: str) -> bool:
        """Start (or restart) `name`; False for a camera that has nothing left to send."""
        config_path, overrides = str(self.config.path), self.config.overrides
        if name in self.cameras:
            run = self.cameras[name]
            start = run.next_start()
            if start is None:
                log.info("%s had sent all it was asked to before it died: not restarted", name)
                self.finished.add(name)
                return False
            summary_path, options = start
            self.sup.start(name, camera_child, config_path, overrides, run.camera_id, summary_path, **options)
            return True
        summary = str(self.out / f"{name}.{self.incarnation[name]}.json")
        if name == "recorder":
            self.sup.start(name, recorder_child, config_path, overrides, str(self.db), summary)
        else:
            self.sup.start(name, worker_child, config_path, overrides, name, summary, str(self.ready(name)))
        return True

    def watch(self, restarts: Restarts, stopping: Callable[[], bool], *, final: bool = False) -> str | None:
        """Note the children that died, restart those whose time has come (`final`: the recorder now,
        whatever its delay); the name of a child the line cannot do without that was given up on."""
        ending = final or stopping()
        for name in [*self.incarnation, *self.cameras]:
            if (name not in self.sup.names or name in self.finished or self.sup.alive(name)
                    or restarts.waiting(name)):
                continue
            status = self.sup.exit_codes()[name]
            camera = name in self.cameras
            if camera and (status == 0 or ending):  # a camera's normal end, or the line's stop
                continue
            if status == 0 and ending:  # stopped with the line (Ctrl-C reaches every child)
                continue
            delay = restarts.crashed(name, status)
            if delay is None:
                policy = restarts.policy
                log.error("%s exited with status %s: restarted %d times within %.0f s already, not again", name,
                          status, policy.max_restarts, policy.window_s)
            else:
                log.error("%s exited with status %s while the line runs: restart #%d in %.1f s", name, status,
                          restarts.counts.get(name, 0) + 1, delay)
        given_up = [name for name in ("recorder", *self.cameras) if name in restarts.given_up]
        if given_up:
            return given_up[0]
        if all(w in restarts.given_up for w in self.workers):
            return self.workers[-1]
        # at the end only the recorder matters: a worker restarted now would find no frames
        for name in restarts.due(["recorder"] if final else None, force=final):
            if name in self.incarnation:
                self.incarnation[name] += 1
            self.start(name)
        return None


def next_coil_number(db: Path, line_type: str) -> int | None:
    """The number a new run's first simulated coil gets (None: a new database, the seed decides)."""
    from cameras.base import coil_prefix
    from inspection.records import line_reads
    from inspection.records.db import database_errors, open_db

    if not db.is_file() or db.stat().st_size == 0:  # an empty file is a new database to the recorder
        return None
    reader = open_db(db, readonly=True)  # not a line database: one line naming it, before anything starts
    try:
        with database_errors(db):
            return line_reads.next_coil_number(reader, coil_prefix(line_type))
    finally:
        reader.close()


def _wait_ready(sup: Supervisor, files: list[Path], workers: list[str], stop: StopFlag,
                timeout_s: float = 300.0) -> bool:
    """Wait until every worker has loaded its model (so live cameras do not drop frames at start)."""
    deadline = time.monotonic() + timeout_s
    while not all(f.exists() for f in files):
        if stop.is_set() or time.monotonic() > deadline or any(not sup.alive(w) for w in workers):
            return False
        time.sleep(0.1)
    return True
