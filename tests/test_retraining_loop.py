"""The whole retraining loop on a running line (issue 14): nothing stops while the model changes.

`steel-inspect run` inspects simulated coils with the line's model (the repository's active hot model,
copied into a registry under tmp_path) and keeps running throughout. Inspectors review defects of the
finished coils through the records API (confirm, relabel -- one class new at this plant -- and
reject) in two rounds; each round is exported with `dataset export`; `train --plant-data` trains a
tiny candidate on a tiny public-style dataset the test writes plus both exports; `models compare`
puts the candidate beside the line's model on the held-out plant coils; `models promote` refuses
it at the gate and takes it with --force and a reason, which the registry records; the running
worker switches between batches, and the next coil is inspected by the candidate with no frame lost.

Real processes, a real SQLite database, real ONNX models, real training (a tiny recipe and fewer
background frames, so it takes seconds).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from inspection import datasets as datasets_module  # noqa: E402
from inspection.cli import main  # noqa: E402
from inspection.config import LineConfig, load_config  # noqa: E402
from inspection.manifest import openvino_copy  # noqa: E402
from inspection.records import queries  # noqa: E402
from inspection.records.audit_keys import key_if_present  # noqa: E402
from inspection.records.db import open_db  # noqa: E402
from inspection.records.grading import load_rules  # noqa: E402
from inspection.records.store import Store  # noqa: E402
from inspection.registry import Registry  # noqa: E402
from tests.line_configs import write_line_config  # noqa: E402
from tests.line_runs import check_books  # noqa: E402
from tests.tiny_datasets import write_tiny_neu  # noqa: E402
from tests.waits import wait_for  # noqa: E402
from training import finalize as finalize_module  # noqa: E402
from training import train as train_module  # noqa: E402
from training.split import make_split, write_split  # noqa: E402

# the line runs paced for about 6 coils before training starts; a loaded machine took 350 s
pytestmark = pytest.mark.timeout(900)

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
NEW_CLASS = "scale_pickup"  # what the inspectors call a defect type the public set does not have
COILS_PER_ROUND = 3
TINY = train_module.Recipe(dataset="neu-det", stride=8, backbone="plain", window=(64, 64), epochs=2, batch_size=4)


def test_reviews_become_a_model_that_the_running_line_picks_up(tmp_path: Path, ipc_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    public = _tiny_public_dataset(tmp_path, monkeypatch)
    split_file = tmp_path / "splits" / "neu-det.json"
    split_before = hashlib.sha256(split_file.read_bytes()).hexdigest()
    registry, line_model = _registry_with_the_line_model(tmp_path / "models")
    config_path = write_line_config(tmp_path, ipc_dir=ipc_dir, width_px=512, frame_height_px=256, coil_length_m=3.0,
                                    speed_m_per_s=1.0, extra={
                                        'registry = ""': f'registry = "{registry.root}"',
                                        "live = true": "live = false",  # wait for the worker: every frame inspected
                                        "defects_per_100m = 40.0": "defects_per_100m = 100.0",
                                        "coil_mix = [[0.4, 0.0], [0.3, 0.7], [0.2, 4.0], [0.1, 30.0]]": "coil_mix = []",
                                        # procedural defects: the same line on machines with and without the datasets
                                        'datasets = ""': f'datasets = "{tmp_path / "no-datasets"}"'})
    line = load_config(config_path)
    step = _Steps()
    with _running_line(config_path, tmp_path) as run:
        # 1. The line inspects coils with its model.
        coils = wait_for(lambda: _finished_coils(line.database, min_defects=2, count=2 * COILS_PER_ROUND), 240,
                         f"{2 * COILS_PER_ROUND} finished coils with defects", ignore=(sqlite3.Error,))
        step("line inspected the first coils")
        # 2. Inspectors review them in two rounds; each round is exported on its own.
        first = _review(line, coils[:COILS_PER_ROUND])
        exports = [tmp_path / "plant-1", tmp_path / "plant-2"]
        assert _export(config_path, exports[0], capsys) == first
        since = _iso_after(time.time_ns())  # every review of round 1 is earlier, every one of round 2 later
        second = _review(line, coils[COILS_PER_ROUND:])
        assert _export(config_path, exports[1], capsys, "--since", since) == second
        for folder in exports:
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["new_classes"] == [NEW_CLASS]
            assert {s["model_version"] for s in manifest["samples"]} == {line_model}
        step("reviews and exports")

        # 3. Train a candidate on the public data plus both exports.
        candidate, summary = _train(public, exports, registry, tmp_path / "run", capsys)
        data = registry.resolve(candidate).data
        _check_candidate(data, summary, first, second, coils, exports, split_file, registry, line_model)
        assert hashlib.sha256(split_file.read_bytes()).hexdigest() == split_before  # public split untouched
        _check_resume_needs_the_same_plant_data(public, exports, registry, tmp_path / "run", capsys)
        step("training")

        # 4. Compare on the held-out plant coils.
        holdout = Path(summary["plant_holdout"])
        figures = _compare(registry, candidate, holdout, tmp_path / "compare.json", capsys)
        held_out_images = len(list((holdout / "images").iterdir()))
        assert figures["a"]["images"] == figures["b"]["images"] == held_out_images
        assert NEW_CLASS in figures["b"]["per_class"]  # the candidate knows the plant's class ...
        assert figures["a"]["unseen_classes"][NEW_CLASS]["gt_boxes"] >= 1  # ... the line's model never learned it
        step("comparison")

        # 5. Promote through the gate: refused (the candidate's test figures are not comparable), then forced.
        argv = ["models", "--registry", str(registry.root), "promote", candidate, "--config", str(config_path),
                "--by", "ml-engineer"]
        assert main(argv) == 2
        assert f"{candidate} is worse than the active {line_model}" in capsys.readouterr().err
        assert registry.active("hot") == line_model
        reason = "loop test: tiny candidate, plant hold-out compared"
        assert main([*argv, "--force", "--reason", reason]) == 0
        capsys.readouterr()
        entry = registry.history()[-1]
        assert (entry["version"], entry["previous"], entry["by"], entry["reason"]) == (
            candidate, line_model, "ml-engineer", reason)
        assert entry["forced_past_gate"] and "not comparable" in entry["forced_past_gate"][0]
        promoted_at = dt.datetime.fromisoformat(entry["time"])
        step("promotion")

        # 6. The running worker switches; the next whole coil is the candidate's.
        coil = wait_for(lambda: _coil_inspected_only_by(line.database, candidate), 240,
                        f"a finished coil inspected only by {candidate}", ignore=(sqlite3.Error,))
        step("the running line switched models")
    step("line stopped")
    summary_run = run["summary"]
    assert run["returncode"] == 0, run["log"][-2000:]
    assert summary_run["frames_lost"] == 0 and summary_run["frames_sent"] == summary_run["frames_inspected"]
    assert summary_run["worker_restarts"] == 0 and summary_run["crashes"] == []
    check_books(line.database, summary_run)
    _check_one_switch_per_camera(line.database, line_model, candidate)
    reader = open_db(line.database, readonly=True)
    try:
        defects = queries.coil_defects(reader, coil)
    finally:
        reader.close()
    assert {d["model_version"] for d in defects} <= {candidate}
    assert registry.active_at("hot", promoted_at - dt.timedelta(seconds=1)) == line_model
    assert registry.active_at("hot", dt.datetime.now(dt.UTC)) == candidate
    step("books checked")


class _Steps:
    """Logs each step's wall time and CPU (this process: training, exports, comparison; the line's
    processes once they have ended), so a slow run in CI says where its time went."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.line_cpu = time.monotonic(), time.process_time(), 0.0

    def __call__(self, name: str) -> None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        line_cpu = children.ru_utime + children.ru_stime
        log.info("loop step %s: %.1f s wall, %.1f s CPU here, %.1f s CPU of ended processes", name,
                 time.monotonic() - self.wall, time.process_time() - self.cpu, line_cpu - self.line_cpu)
        self.wall, self.cpu, self.line_cpu = time.monotonic(), time.process_time(), line_cpu


def _iso_after(time_ns: int) -> str:
    """An ISO time (what `dataset export --since` takes, microseconds) at or after `time_ns`."""
    micros = -(-time_ns // 1000)
    return dt.datetime.fromtimestamp(micros // 10**6, dt.UTC).replace(microsecond=micros % 10**6).isoformat()


# -- the line -------------------------------------------------------------------------------------------

class _running_line:  # noqa: N801 - used as a context manager, reads like one
    """`steel-inspect run` in its own process until the block ends, then SIGTERM (a clean stop); the dict
    it yields gets the exit status, the JSON summary and the log."""

    def __init__(self, config: Path, folder: Path) -> None:
        self.config, self.out, self.err = config, folder / "run.json", folder / "run.log"
        self.result: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "inspection", "run", "--config", str(self.config)],
                                         cwd=REPO, stdout=out, stderr=err, text=True)
        return self.result

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.result["returncode"] = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.result["returncode"] = self.proc.wait()
        self.result["log"] = self.err.read_text()
        text = self.out.read_text()
        try:
            self.result["summary"] = json.loads(text[text.index("{"):])
        except ValueError:  # no summary (a line that failed): the test's own failure, if any, says more
            self.result["summary"] = {}


def _finished_coils(db: Path, min_defects: int, count: int) -> list[str] | None:
    """The first `count` coils both cameras have ended with at least `min_defects` defects (None before)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT e.coil FROM coil_events e WHERE e.kind = 'coil_end' GROUP BY e.coil "
            "HAVING count(DISTINCT e.camera) = 2 AND (SELECT count(*) FROM defects d WHERE d.coil = e.coil) >= ? "
            "ORDER BY max(e.time_ns)", (min_defects,)).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows[:count]] if len(rows) >= count else None


def _coil_inspected_only_by(db: Path, version: str) -> str | None:
    """A coil both cameras have ended whose every frame the model `version` inspected."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT f.coil FROM frames f LEFT JOIN models m ON m.id = f.model_id GROUP BY f.coil "
            "HAVING sum(m.version IS NOT ? OR f.status != 'inspected') = 0 AND "
            "(SELECT count(DISTINCT camera) FROM coil_events e WHERE e.coil = f.coil AND e.kind = 'coil_end') = 2 "
            "LIMIT 1", (version,)).fetchone()
    finally:
        con.close()
    return row[0] if row else None


def _check_one_switch_per_camera(db: Path, old: str, new: str) -> None:
    """Each camera's frames, in stream order: the old model's, then only the new one's (never back)."""
    con = sqlite3.connect(db)
    try:
        for (camera,) in con.execute("SELECT DISTINCT camera FROM frames").fetchall():
            versions = [v for (v,) in con.execute(
                "SELECT m.version FROM frames f JOIN models m ON m.id = f.model_id WHERE f.camera = ? "
                "ORDER BY f.seq", (camera,))]
            switch = versions.index(new)
            assert set(versions[:switch]) == {old} and set(versions[switch:]) == {new}, camera
    finally:
        con.close()


# -- reviews and exports --------------------------------------------------------------------------------

def _review(line: LineConfig, coils: list[str]) -> dict[str, Any]:
    """Per coil: one defect relabelled to the new class, one rejected as a false alarm, one confirmed
    (or, when the model called them all unknown, relabelled to a public class). Through `Store`, as the
    console writes, signed with the line's audit key."""
    done: dict[str, Any] = {"coils": set(), "negatives": 0, "classes": {}}
    store = Store(line.database, rules=load_rules(line.records.rules), coverage_min=line.records.coverage_min,
                  actor="console", audit_key=key_if_present(line.audit_key_path))
    with store:
        for coil in coils:
            defects = queries.coil_defects(store.db, coil)
            named = [d for d in defects[2:] if d["class"] != "unknown"]
            store.add_review(defects[0]["id"], "anna", "relabel", new_class=NEW_CLASS, reason="scale pick-up")
            store.add_review(defects[1]["id"], "anna", "reject", reason="roll shadow")
            if named:
                store.add_review(named[0]["id"], "ben", "confirm")
                kept = named[0]["class"]
            elif len(defects) > 2:
                store.add_review(defects[2]["id"], "ben", "relabel", new_class="patches")
                kept = "patches"
            else:
                kept = None
            done["coils"].add(coil)
            done["negatives"] += 1
            for cls in (NEW_CLASS, kept):
                if cls is not None:
                    done["classes"][cls] = done["classes"].get(cls, 0) + 1
    return done


def _export(config: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["dataset", "export", "--config", str(config), "--line-type", "hot", "--out", str(out),
                 "--no-progress", *extra]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    return {"coils": {s["coil"] for s in manifest["samples"]}, "negatives": manifest["negatives"],
            "classes": manifest["classes"]}


# -- training, comparison -------------------------------------------------------------------------------

def _tiny_public_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 12-image NEU-shaped set with its own split file, and the tiny recipe in place of the hot one."""
    root = tmp_path / "public"
    folder = write_tiny_neu(root, np.random.default_rng(5), min_xy=4)
    write_split(make_split(folder, "neu-det", seed=0, val_fraction=0.25, test_fraction=0.25),
                tmp_path / "splits" / "neu-det.json")
    monkeypatch.setattr(datasets_module, "SPLITS_DIR", tmp_path / "splits")
    monkeypatch.setitem(train_module.RECIPES, "hot", TINY)
    monkeypatch.setattr(finalize_module, "CHOICE_FRAMES", 1)  # background frames: 6 tiles each instead of 48 / 120
    monkeypatch.setattr(finalize_module, "REPORT_FRAMES", 1)
    return root


def _registry_with_the_line_model(root: Path) -> tuple[Registry, str]:
    """A registry under tmp_path whose active hot model is the repository's."""
    source = Registry(REPO / "models").resolve("hot")
    registry = Registry(root)
    copy, folder = openvino_copy(source), source.model_path.parent  # an int8 copy's OpenVINO files come along
    extra = {str(p.relative_to(folder)): p for p in (copy.model_path, copy.weights_path)} if copy else {}
    registry.add(source.model_path, source.data, version=source.version, extra_files=extra)
    registry.promote(source.version, by="test", reason="the line's model when the test starts")
    return registry, source.version


def _train_argv(public: Path, exports: list[Path], registry: Registry, out: Path) -> list[str]:
    return ["train", "--line-type", "hot", "--datasets", str(public), "--models", str(registry.root),
            "--out", str(out), "--epochs", "2", "--negatives", "0", "--line-views", "0",
            "--plant-data", *map(str, exports)]


def _train(public: Path, exports: list[Path], registry: Registry, out: Path,
           capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    assert main(_train_argv(public, exports, registry, out)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return summary["version"], summary


def _check_candidate(data: dict[str, Any], summary: dict[str, Any], first: dict[str, Any], second: dict[str, Any],
                     coils: list[str], exports: list[Path], split_file: Path, registry: Registry,
                     line_model: str) -> None:
    assert summary["registered"] is True and summary["activated"] is False
    assert registry.active("hot") == line_model  # a plant-trained model waits for the gate
    assert data["classes"] == [*NEU, NEW_CLASS]
    assert data["class_sources"] == {**{c: "neu-det" for c in NEU}, NEW_CLASS: "plant"}
    plant = data["data"]["plant"]
    split = plant["split"]
    by_split = [set(split[s]["coils"]) for s in ("train", "val", "test")]
    assert set().union(*by_split) == first["coils"] | second["coils"] == set(coils)
    assert sum(len(s) for s in by_split) == len(coils)  # every coil in exactly one split
    assert all(split[s]["samples"] >= 1 for s in ("train", "val", "test"))
    assert sum(split[s]["negatives"] for s in ("train", "val", "test")) == first["negatives"] + second["negatives"]
    assert split["train"]["boxes_per_class"].get(NEW_CLASS, 0) >= 1
    assert [f["path"] for f in plant["folders"]] == [str(p.resolve()) for p in exports]
    public_test = json.loads(split_file.read_text())["test"]
    metrics = data["metrics"]
    assert metrics["test"]["images"] == len(public_test)  # the public test split alone
    assert metrics["plant_test"]["images"] == split["test"]["samples"]
    assert metrics["plant_test"]["coils"] == split["test"]["coils"]
    assert summary["plant_test"]["map50"] == metrics["plant_test"]["map50"]
    holdout = json.loads((Path(summary["plant_holdout"]) / "manifest.json").read_text())
    assert holdout["coils"] == split["test"]["coils"]
    assert {s["coil"] for s in holdout["samples"]} <= set(split["test"]["coils"])


def _check_resume_needs_the_same_plant_data(public: Path, exports: list[Path], registry: Registry, out: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    without = [a for a in _train_argv(public, exports, registry, out) if a not in ("--plant-data", *map(str, exports))]
    for argv in ([*without, "--resume"], [*without, "--plant-data", str(exports[0]), "--resume"]):
        assert main(argv) == 2
        assert "resume it with the same plant folders" in capsys.readouterr().err


def _compare(registry: Registry, candidate: str, holdout: Path, out: Path,
             capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["models", "--registry", str(registry.root), "compare", "hot", candidate, "--data", str(holdout),
                 "--rounds", "1", "--no-progress", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"{NEW_CLASS}: found (not learned)" in table and f"{NEW_CLASS}: recall" in table
    return json.loads(out.read_text())["figures"]
