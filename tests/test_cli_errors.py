"""Bad input at the command line (issue 12 item 5): every case ends in one line on stderr that names the
file or the key, with exit status 2, never a traceback; a check that fails on good input exits 1.

The table below is run in-process through `inspection.cli.main` (fast: one interpreter), and a few
rows again as real `python -m inspection` processes, the way a user meets them. Rows that need a
folder the user cannot write run as a process only (under root, which may write anywhere, without
the capabilities that let it: `setpriv`).

`{w}` in a row is the scratch folder (`scratch` below): good and bad configs, databases, model
registries and files, built once for the module.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inspection.cli import main
from inspection.records.audit_keys import KEY_FILE_NAME, generate_key, load_key
from inspection.records.db import open_db
from inspection.records.store import Store
from inspection.registry import Registry
from inspection.testing.synthetic import coil_messages
from tests.line_configs import write_line_config
from tests.tiny_models import add_tiny_model, tiny_manifest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # split on spaces after `{w}` is filled in
    code: int  # 2: bad input; 1: the check ran and failed; 0: fine
    message: str  # must appear in the error line (exit 2) or in the output (exit 0 / 1)
    process: bool = False  # also run as `python -m inspection`
    unwritable: bool = False  # needs a folder the user cannot write: run as a process only


G = "--config {w}/line.toml"  # the good line config: ipc endpoints, keys, tiny model registry, all under {w}
B = "{w}/cfg"  # bad configs


CASES: list[Case] = [
    # -- the command line itself ---------------------------------------------------------------------------
    Case("no-command", "", 2, "the following arguments are required: COMMAND"),
    Case("unknown-command", "frobnicate", 2, "argument COMMAND: invalid choice: 'frobnicate'"),
    Case("report-no-coil", "report --format json", 2, "the following arguments are required: --coil"),
    Case("report-bad-format", "report --coil X --format docx", 2, "argument --format: invalid choice: 'docx'"),
    Case("audit-no-action", "audit", 2, "the following arguments are required: ACTION"),
    Case("models-rollback-bad-type", "models rollback warm", 2, "argument line_type: invalid choice: 'warm'"),
    # -- config files --------------------------------------------------------------------------------------
    Case("config-missing", "recorder --config {w}/nope.toml", 2, "{w}/nope.toml: no such config file"),
    Case("config-syntax", f"camera --config {B}/syntax.toml", 2, f"{B}/syntax.toml: not valid TOML", process=True),
    Case("config-empty", f"run --config {B}/empty.toml", 2, f"{B}/empty.toml: line: missing"),
    Case("config-folder", f"keys generate --config {B}", 2, f"{B}: cannot read: "),
    Case("config-not-utf8", f"recorder --config {B}/latin1.toml", 2, f"{B}/latin1.toml: cannot read: "),
    Case("config-unknown-section", f"recorder --config {B}/unknown_section.toml", 2,
         f"{B}/unknown_section.toml: extras: unknown key (a typo?)"),
    Case("config-unknown-key", f"camera --config {B}/unknown_key.toml", 2,
         f"{B}/unknown_key.toml: worker.batch_sise: unknown key (a typo?)"),
    Case("config-wrong-type", f"run --config {B}/wrong_type.toml", 2,
         f"{B}/wrong_type.toml: worker.batch_size: expected an integer, got 'two'"),
    Case("config-wrong-type-float", f"audit verify --config {B}/speed_text.toml", 2,
         f"{B}/speed_text.toml: line.speed_m_per_s: expected a number, got 'fast'"),
    Case("config-wrong-type-bool", f"crops prune --config {B}/live_text.toml", 2,
         f"{B}/live_text.toml: cameras[0].live: expected true or false, got 'yes'"),
    Case("config-table-expected", f"report --coil X --config {B}/line_scalar.toml", 2,
         f"{B}/line_scalar.toml: line: expected a table, got 5"),
    Case("config-bad-choice", f"audit verify --config {B}/surface.toml", 2,
         f"{B}/surface.toml: cameras[0].surface: expected one of top, bottom, got 'side'"),
    Case("config-bad-line-type", f"keys generate --config {B}/line_type.toml", 2,
         f"{B}/line_type.toml: line.type: expected one of hot, cold, got 'warm'"),
    Case("config-zero", f"report --coil X --config {B}/batch_zero.toml", 2,
         f"{B}/batch_zero.toml: worker.batch_size: expected a number > 0, got 0"),
    Case("config-share-out-of-range", f"recorder --config {B}/coverage.toml", 2,
         f"{B}/coverage.toml: records.coverage_min: expected a share between 0 and 1, got 1.5"),
    Case("config-overlap", f"camera --config {B}/overlap.toml", 2, f"{B}/overlap.toml: worker.tile_overlap_px: "),
    Case("config-missing-key", f"crops prune --config {B}/no_id.toml", 2, f"{B}/no_id.toml: line.id: missing"),
    Case("config-no-cameras", f"run --config {B}/no_cameras.toml", 2,
         f"{B}/no_cameras.toml: cameras: expected at least one [[cameras]] entry"),
    Case("config-duplicate-camera", f"camera --config {B}/dup_camera.toml", 2,
         f"{B}/dup_camera.toml: cameras: duplicate camera id 'top-1'"),
    Case("config-bad-results-endpoint", f"recorder --config {B}/results_endpoint.toml", 2,
         f"{B}/results_endpoint.toml: endpoints.results: "),
    Case("config-bad-plc-endpoint", f"plc-listen --config {B}/plc_endpoint.toml --timeout 1", 2,
         f"{B}/plc_endpoint.toml: endpoints.plc: "),
    Case("config-bad-camera-endpoint", f"camera --config {B}/camera_endpoint.toml", 2,
         f"{B}/camera_endpoint.toml: cameras[0].endpoint: "),
    Case("run-config-bad-camera-endpoint", f"run --config {B}/camera_endpoint.toml", 2,
         f"{B}/camera_endpoint.toml: cameras[0].endpoint: "),
    Case("report-config-bad-endpoint", f"report --coil X --config {B}/results_endpoint.toml", 2,
         f"{B}/results_endpoint.toml: endpoints.results: "),
    Case("config-bad-port", f"camera --config {B}/bad_port.toml", 2,
         f"{B}/bad_port.toml: cameras[0].endpoint: endpoint 'tcp://127.0.0.1:99999': expected tcp://HOST:PORT"),
    Case("run-config-rules-missing", f"run --config {B}/rules_missing.toml", 2, "{w}/no_rules.toml: no such rule set"),
    Case("config-rules-missing", f"recorder --config {B}/rules_missing.toml", 2, "{w}/no_rules.toml: no such rule set"),
    Case("config-keys-missing", f"recorder --config {B}/keys_missing.toml", 2, "{w}/no_keys"),
    Case("config-unknown-camera", f"camera {G} --camera side-9", 2, "{w}/line.toml: no camera 'side-9'"),
    # -- numbers on the command line -----------------------------------------------------------------------
    Case("recorder-batch-0", f"recorder {G} --batch 0", 2, "argument --batch: expected an integer >= 1, got '0'"),
    Case("recorder-batch-negative", f"recorder {G} --batch -3", 2,
         "argument --batch: expected an integer >= 1, got '-3'",
         process=True),
    Case("recorder-batch-text", f"recorder {G} --batch many", 2,
         "argument --batch: expected an integer >= 1, got 'many'"),
    Case("recorder-flush-0", f"recorder {G} --flush-ms 0", 2, "argument --flush-ms: expected a number > 0, got '0'"),
    Case("recorder-flush-negative", f"recorder {G} --flush-ms -5", 2,
         "argument --flush-ms: expected a number > 0, got '-5'"),
    Case("recorder-flush-nan", f"recorder {G} --flush-ms nan", 2,
         "argument --flush-ms: expected a number > 0, got 'nan'"),
    Case("recorder-grace-negative", f"recorder {G} --grace-s -1", 2,
         "argument --grace-s: expected a number >= 0, got '-1'"),
    Case("recorder-grace-inf", f"recorder {G} --grace-s inf", 2,
         "argument --grace-s: expected a number >= 0, got 'inf'"),
    Case("plc-count-0", "plc-listen --connect tcp://127.0.0.1:9 --count 0", 2,
         "argument --count: expected an integer >= 1, got '0'"),
    Case("plc-count-negative", "plc-listen --connect tcp://127.0.0.1:9 --count -2", 2,
         "argument --count: expected an integer >= 1, got '-2'"),
    Case("plc-timeout-0", "plc-listen --connect tcp://127.0.0.1:9 --timeout 0", 2,
         "argument --timeout: expected a number > 0, got '0'"),
    Case("plc-timeout-negative", "plc-listen --connect tcp://127.0.0.1:9 --timeout -1.5", 2,
         "argument --timeout: expected a number > 0, got '-1.5'"),
    Case("camera-frames-0", f"camera {G} --frames 0", 2, "argument --frames: expected an integer >= 1, got '0'"),
    Case("camera-frames-negative", f"camera {G} --frames -4", 2,
         "argument --frames: expected an integer >= 1, got '-4'"),
    Case("camera-coils-0", f"camera {G} --coils 0", 2, "argument --coils: expected an integer >= 1, got '0'"),
    Case("camera-seed-negative", f"camera {G} --seed -1", 2, "argument --seed: expected an integer >= 0, got '-1'"),
    Case("run-max-frames-0", f"run {G} --max-frames 0", 2, "argument --max-frames: expected an integer >= 1, got '0'"),
    Case("run-workers-0", f"run {G} --workers 0", 2, "argument --workers: expected an integer >= 1, got '0'"),
    Case("run-workers-negative", f"run {G} --workers -2", 2, "argument --workers: expected an integer >= 1, got '-2'"),
    Case("run-seed-negative", f"run {G} --seed -5", 2, "argument --seed: expected an integer >= 0, got '-5'"),
    Case("demo-port-high", f"demo {G} --port 70000 --no-console", 2,
         "argument --port: expected a port number 1..65535, got '70000'"),
    Case("demo-port-0", f"demo {G} --port 0 --no-console", 2,
         "argument --port: expected a port number 1..65535, got '0'"),
    Case("demo-mes-negative", f"demo {G} --mes-coils -1 --no-console", 2,
         "argument --mes-coils: expected an integer >= 0, got '-1'"),
    Case("demo-max-frames-0", f"demo {G} --max-frames 0 --no-console", 2,
         "argument --max-frames: expected an integer >= 1, got '0'"),
    Case("crops-days-0", f"crops prune {G} --days 0", 2, "argument --days: expected an integer >= 1, got '0'"),
    Case("crops-days-negative", f"crops prune {G} --days -7", 2, "argument --days: expected an integer >= 1, got '-7'"),
    Case("predict-threads-negative", "predict --model hot --registry {w}/models --images {w}/images --json {w}/o.json "
         "--threads -1", 2, "argument --threads: expected an integer >= 0, got '-1'"),
    Case("predict-min-score-high", "predict --model hot --registry {w}/models --images {w}/images --json {w}/o.json "
         "--min-score 1.5", 2, "argument --min-score: expected a number from 0 to 1, got '1.5'"),
    Case("predict-min-score-negative", "predict --model hot --registry {w}/models --images {w}/images "
         "--json {w}/o.json --min-score -0.1", 2, "argument --min-score: expected a number from 0 to 1, got '-0.1'"),
    Case("evaluate-min-score", "evaluate --model hot --data {w}/images --json {w}/o.json --min-score 2", 2,
         "argument --min-score: expected a number from 0 to 1, got '2'"),
    Case("train-epochs-0", "train --line-type hot --epochs 0", 2,
         "argument --epochs: expected an integer >= 1, got '0'"),
    Case("train-threads-0", "train --line-type hot --threads 0", 2,
         "argument --threads: expected an integer >= 1, got '0'"),
    Case("train-budget-negative", "train --line-type hot --time-budget-min -3", 2,
         "argument --time-budget-min: expected a number > 0, got '-3'"),
    Case("train-max-images-1", "train --line-type hot --max-images 1", 2,
         "argument --max-images: expected an integer >= 2, got '1'"),
    Case("train-negatives-high", "train --line-type hot --negatives 5", 2,
         "--negatives: expected a share per defect image"),
    Case("train-outliers-high", "train --line-type hot --outliers 1.5", 2,
         "--outliers: expected a share of training crops in 0..1, got 1.5"),
    Case("quantize-calibration-0", "quantize hot --calibration-images 0", 2,
         "argument --calibration-images: expected an integer >= 1, got '0'"),
    Case("quantize-backgrounds-negative", "quantize hot --calibration-backgrounds -1", 2,
         "argument --calibration-backgrounds: expected an integer >= 0, got '-1'"),
    Case("unknown-rule-target-high", "unknown-rule hot --unseen-target 1.5", 2,
         "argument --unseen-target: expected a share in (0, 1], got '1.5'"),
    Case("unknown-rule-target-text", "unknown-rule hot --unseen-target half", 2,
         "argument --unseen-target: expected a share in (0, 1], got 'half'"),
    Case("bench-transport-frames-0", "bench transport --frames 0", 2,
         "argument --frames: expected an integer >= 1, got '0'"),
    Case("bench-transport-trials-0", "bench transport --trials 0", 2,
         "argument --trials: expected an integer >= 1, got '0'"),
    Case("bench-transport-width-negative", "bench transport --width -16", 2,
         "argument --width: expected an integer >= 1, got '-16'"),
    Case("bench-inference-rounds-0", "bench inference --rounds 0", 2,
         "argument --rounds: expected an integer >= 1, got '0'"),
    Case("bench-inference-threads-negative", "bench inference --threads -1", 2,
         "argument --threads: expected an integer >= 0, got '-1'"),
    Case("bench-inference-seconds-0", "bench inference --seconds 0", 2,
         "argument --seconds: expected a number > 0, got '0'"),
    Case("bench-inference-workers-0", "bench inference --workers 0", 2,
         "argument --workers: expected an integer >= 1, got '0'"),
    Case("bench-inference-offered-0", "bench inference --offered-mpx-per-s 40 0", 2,
         "argument --offered-mpx-per-s: expected a number > 0, got '0'"),
    Case("bench-e2e-frames-0", "bench e2e --frames 0", 2, "argument --frames: expected an integer >= 1, got '0'"),
    Case("bench-e2e-workers-0", "bench e2e --workers 0", 2, "argument --workers: expected an integer >= 1, got '0'"),
    Case("bench-e2e-iou-high", "bench e2e --iou 1.5", 2, "argument --iou: expected a number from 0 to 1, got '1.5'"),
    Case("bench-e2e-seam-negative", "bench e2e --seam-share -0.5", 2,
         "argument --seam-share: expected a number from 0 to 1, got '-0.5'"),
    Case("bench-e2e-variant-no-name", "bench e2e --variant worker.other_class_iou=0", 2,
         "--variant 'worker.other_class_iou=0': expected a NAME first"),
    Case("bench-e2e-variant-twice", "bench e2e --variant a --variant a worker.other_class_iou=0", 2,
         "--variant 'a': given twice"),
    Case("bench-first-stage-frames-0", "bench first_stage --frames 0", 2,
         "argument --frames: expected an integer >= 1, got '0'"),
    Case("bench-first-stage-k-0", "bench first_stage --k-sigma 2.5 0", 2,
         "argument --k-sigma: expected a number > 0, got '0'"),
    Case("bench-records-batch-0", "bench records --batch 0", 2, "argument --batch: expected an integer >= 1, got '0'"),
    Case("bench-records-queries-0", "bench records --queries 0", 2,
         "argument --queries: expected an integer >= 1, got '0'"),
    Case("bench-gpu-seconds-negative", "bench gpu --seconds -1", 2,
         "argument --seconds: expected a number > 0, got '-1'"),
    Case("bench-soak-minutes-0", "bench soak --minutes 0", 2, "argument --minutes: expected a number > 0, got '0'"),
    Case("bench-soak-warmup-negative", "bench soak --warmup-frames -1", 2,
         "argument --warmup-frames: expected an integer >= 0, got '-1'"),
    Case("bench-console-repeat-0", "bench console --repeat 0", 2,
         "argument --repeat: expected an integer >= 1, got '0'"),
    # -- databases -----------------------------------------------------------------------------------------
    Case("recorder-db-under-file", f"recorder {G} --db {{w}}/file/line.db", 2,  # its anchor file is read first
         "{w}/file/line.db.anchors.jsonl: cannot read the audit anchor file: {w}/file is not a folder"),
    Case("crops-db-under-file", f"crops prune {G} --db {{w}}/file/line.db", 2,
         "{w}/file/line.db: cannot create the database: {w}/file is not a folder"),
    Case("import-db-under-file", "import-plant --json {w}/plant.json --db {w}/file/sub/line.db", 2,
         "{w}/file/sub/line.db: cannot create the database: {w}/file is not a folder"),
    Case("demo-db-under-file", f"demo {G} --db {{w}}/file/line.db --no-console", 2,
         "{w}/file/line.db: cannot create the database: {w}/file is not a folder"),
    Case("run-db-under-file", f"run {G} --db {{w}}/file/line.db", 2,
         "{w}/file/line.db: cannot create the database: {w}/file is not a folder"),
    Case("report-db-under-file", "report --coil X --format json --db {w}/file/line.db", 2,
         "{w}/file/line.db: no such database"),
    Case("report-db-missing-folder", "report --coil X --format json --db {w}/missing/line.db", 2,
         "{w}/missing/line.db: no such database"),
    Case("audit-db-missing-folder", "audit verify --db {w}/missing/line.db", 2,
         "{w}/missing/line.db: no such database"),
    Case("recorder-db-corrupt", f"recorder {G} --db {{w}}/corrupt.db", 2, "{w}/corrupt.db: not a SQLite database",
         process=True),
    Case("recorder-db-text", f"recorder {G} --db {{w}}/text.db", 2, "{w}/text.db: not a SQLite database"),
    Case("recorder-db-folder", f"recorder {G} --db {{w}}/folder.db", 2,
         "{w}/folder.db: is a folder, not a database file"),
    Case("recorder-db-foreign", f"recorder {G} --db {{w}}/foreign.db", 2,
         "{w}/foreign.db: not a steel-inspect line database: it holds other tables"),
    Case("audit-db-corrupt", "audit verify --db {w}/corrupt.db", 2, "{w}/corrupt.db: not a SQLite database"),
    Case("audit-db-empty", "audit verify --db {w}/empty.db", 2,
         "{w}/empty.db: not a steel-inspect line database: the file is empty",
         process=True),
    Case("audit-db-text", "audit verify --db {w}/text.db", 2, "{w}/text.db: not a SQLite database"),
    Case("audit-db-folder", "audit verify --db {w}/folder.db", 2, "{w}/folder.db: no such database"),
    Case("audit-db-foreign", "audit verify --db {w}/foreign.db", 2,
         "{w}/foreign.db: not a steel-inspect line database"),
    Case("report-db-corrupt", "report --coil X --format json --db {w}/corrupt.db", 2,
         "{w}/corrupt.db: not a SQLite database"),
    Case("report-db-empty", "report --coil X --format json --db {w}/empty.db", 2,
         "{w}/empty.db: not a steel-inspect line database: the file is empty"),
    Case("report-db-foreign", "report --coil X --format json --db {w}/foreign.db", 2,
         "{w}/foreign.db: not a steel-inspect line database"),
    Case("crops-db-corrupt", f"crops prune {G} --db {{w}}/corrupt.db", 2, "{w}/corrupt.db: not a SQLite database"),
    Case("crops-db-folder", f"crops prune {G} --db {{w}}/folder.db", 2,
         "{w}/folder.db: is a folder, not a database file"),
    Case("import-db-corrupt", "import-plant --json {w}/plant.json --db {w}/corrupt.db", 2,
         "{w}/corrupt.db: not a SQLite database"),
    Case("run-db-corrupt", f"run {G} --db {{w}}/corrupt.db", 2, "{w}/corrupt.db: not a SQLite database"),
    Case("recorder-db-unwritable", f"recorder {G} --db {{w}}/ro/line.db", 2,
         "{w}/ro/line.db: cannot create the database: folder {w}/ro is not writable", unwritable=True),
    Case("crops-db-unwritable", f"crops prune {G} --db {{w}}/ro/line.db", 2,
         "{w}/ro/line.db: cannot create the database: folder {w}/ro is not writable", unwritable=True),
    Case("import-db-unwritable", "import-plant --json {w}/plant.json --db {w}/ro/sub/line.db", 2,
         "{w}/ro/sub/line.db: cannot create the database: folder {w}/ro is not writable", unwritable=True),
    Case("keys-dir-unwritable", f"keys generate {G} --dir {{w}}/ro/keys", 2, "{w}/ro/keys", unwritable=True),
    Case("report-db-damaged", "report --coil C-0 --format json --db {w}/damaged.db", 2,
         "{w}/damaged.db: the database is damaged"),
    Case("crops-db-damaged", f"crops prune {G} --db {{w}}/damaged.db", 2, "{w}/damaged.db: the database is damaged"),
    Case("recorder-db-damaged", f"recorder {G} --db {{w}}/damaged.db", 2, "{w}/damaged.db: the database is damaged"),
    Case("audit-tampered", "audit verify --db {w}/tampered.db", 1, "AUDIT BROKEN"),
    Case("audit-intact", "audit verify --db {w}/good.db", 0, "audit intact"),
    Case("report-unknown-coil", "report --coil NOPE --format json --db {w}/good.db", 2, "coil: no coil 'NOPE'"),
    Case("report-out-under-file", "report --coil C-0 --format json --db {w}/good.db --out {w}/file/report.json", 2,
         "{w}/file/report.json: cannot write report: {w}/file is not a folder"),
    # -- models --------------------------------------------------------------------------------------------
    Case("models-show-unknown", "models --registry {w}/models show nope-1", 2, "'nope-1' is neither hot, cold"),
    Case("models-show-sha256", "models --registry {w}/badsha show hot", 2, "manifest says"),
    Case("models-promote-sha256", "models --registry {w}/badsha promote hot-tiny-1", 2,
         "{w}/badsha/hot/hot-tiny-1/manifest.json: sha256 of"),
    Case("models-rollback-nothing", "models --registry {w}/models rollback hot", 2,
         "hot: no earlier active version to roll back to"),
    Case("models-broken-state", "models --registry {w}/broken list", 2,
         "{w}/broken/registry.json: cannot read registry state"),
    Case("models-registry-is-file", "models --registry {w}/file list", 2, "{w}/file"),
    Case("models-show-no-manifest", "models show {w}/nomanifest/model.onnx", 2,
         "{w}/nomanifest/manifest.json: no such manifest file"),
    Case("predict-no-manifest", "predict --model {w}/nomanifest/model.onnx --images {w}/images --json {w}/o.json", 2,
         "{w}/nomanifest/manifest.json: no such manifest file"),
    Case("predict-sha256", "predict --registry {w}/badsha --model hot --images {w}/images --json {w}/o.json", 2,
         "{w}/badsha/hot/hot-tiny-1/manifest.json: sha256 of"),
    Case("predict-not-onnx", "predict --registry {w}/notonnx --model hot --images {w}/images --json {w}/o.json "
         "--providers cpu", 2, "{w}/notonnx/hot/hot-junk-1/model.onnx: ONNX Runtime cannot load the model",
         process=True),
    Case("predict-no-images-folder", "predict --registry {w}/models --model hot --images {w}/nothing --json {w}/o.json",
         2, "--images {w}/nothing: not a folder"),
    Case("predict-json-under-file", "predict --registry {w}/models --model hot --images {w}/images "
         "--json {w}/file/o.json --providers cpu --no-progress", 2,
         "{w}/file/o.json: cannot write: {w}/file is not a folder"),
    Case("doctor-no-manifest", "doctor --model {w}/nomanifest/model.onnx", 2,
         "{w}/nomanifest/manifest.json: no such manifest file"),
    Case("evaluate-no-manifest", "evaluate --model {w}/nomanifest/model.onnx --data {w}/images --json {w}/o.json", 2,
         "{w}/nomanifest/manifest.json: no such manifest file"),
    Case("run-model-no-manifest", f"run --config {B}/model_nomanifest.toml", 2,
         "{w}/nomanifest/manifest.json: no such manifest file", process=True),
    Case("run-model-sha256", f"run --config {B}/model_badsha.toml", 2,
         "{w}/badsha/hot/hot-tiny-1/manifest.json: sha256 of"),
    Case("run-model-unknown", f"run --config {B}/model_unknown.toml", 2, "'hot-nope-3' is neither hot, cold"),
    Case("run-model-not-onnx", f"run --config {B}/model_notonnx.toml", 2,
         "{w}/notonnx/hot/hot-junk-1/model.onnx: ONNX Runtime cannot load the model"),
    # -- endpoints, keys, sources --------------------------------------------------------------------------
    Case("plc-nothing", "plc-listen", 2,
         "give --config F (endpoint and keys from the line config) or --connect ENDPOINT"),
    Case("plc-bad-connect", "plc-listen --connect nowhere", 2, "argument --connect: endpoint 'nowhere': "),
    Case("plc-connect-no-port", "plc-listen --connect tcp://127.0.0.1", 2,
         "argument --connect: endpoint 'tcp://127.0.0.1': expected tcp://HOST:PORT with a port 1..65535"),
    Case("plc-keys-missing", "plc-listen --connect tcp://127.0.0.1:9 --keys {w}/no_keys --timeout 1", 2, "{w}/no_keys"),
    Case("camera-bad-connect", f"camera {G} --connect nowhere", 2, "argument --connect: endpoint 'nowhere': "),
    Case("camera-bad-bind", f"camera {G} --bind tcp://", 2, "argument --bind: endpoint 'tcp://': "),
    Case("camera-folder-missing", f"camera {G} --source folder --folder {{w}}/nothing", 2, "{w}/nothing"),
    Case("recorder-bad-endpoint", f"recorder {G} --endpoint udp://127.0.0.1:9", 2,
         "argument --endpoint: endpoint 'udp://127.0.0.1:9': "),
    Case("keys-exist", f"keys generate {G}", 2, "{w}/keys"),
    Case("keys-dir-under-file", f"keys generate {G} --dir {{w}}/file/keys", 2, "{w}/file/keys"),
    # -- users, dataset export, model comparison -----------------------------------------------------------
    Case("users-limit-0", "users log --db {w}/good.db --limit 0", 2,
         "argument --limit: expected an integer >= 1, got '0'"),
    Case("users-db-corrupt", "users list --db {w}/corrupt.db", 2, "{w}/corrupt.db: not a SQLite database"),
    Case("users-db-foreign", "users list --db {w}/foreign.db", 2, "{w}/foreign.db: not a steel-inspect line database"),
    Case("users-db-missing", "users list --db {w}/missing/line.db", 2, "{w}/missing/line.db: no such database"),
    Case("dataset-margin-negative", "dataset export --line-type hot --out {w}/ds --db {w}/good.db --crop-margin -1", 2,
         "argument --crop-margin: expected an integer >= 0, got '-1'"),
    Case("dataset-db-empty", "dataset export --line-type hot --out {w}/ds --db {w}/empty.db", 2,
         "{w}/empty.db: not a steel-inspect line database: the file is empty"),
    Case("models-compare-rounds-0", "models --registry {w}/models compare hot hot --data {w}/images --rounds 0", 2,
         "argument --rounds: expected an integer >= 1, got '0'"),
    Case("bench-plant-rows-0", "bench plant_import --rows 1000 0", 2,
         "argument --rows: expected an integer >= 1, got '0'"),
    # -- plant data ----------------------------------------------------------------------------------------
    Case("import-csv-missing", "import-plant --csv {w}/nope.csv --db {w}/plant.db", 2, "{w}/nope.csv"),
    Case("import-json-bad", "import-plant --json {w}/latin1.json --db {w}/plant.db", 2, "{w}/latin1.json: cannot read"),
    Case("import-json-shape", "import-plant --json {w}/number.json --db {w}/plant.db", 2,
         "{w}/number.json: expected a JSON array of coil objects"),
    Case("import-sql-no-query", "import-plant --sql-url sqlite:///{w}/good.db --db {w}/plant.db", 2,
         "--sql-url needs --query"),
    Case("import-sql-bad-url", "import-plant --sql-url mysql://db/x --query SELECT --db {w}/plant.db", 2,
         "--sql-url mysql://...: expected a sqlite:///path or postgresql:// URL"),
    Case("import-bad-rows", "import-plant --json {w}/bad_rows.json --db {w}/plant.db", 1, "skipped"),
]


def _config_variants(good: str, w: Path) -> dict[str, str]:
    """Bad line configs, each one edit away from the good one (the file name says which)."""

    def edit(old: str, new: str, count: int = 1) -> str:
        assert old in good, old
        return good.replace(old, new, count)

    camera_endpoint = good.split('endpoint = "', 1)[1].split('"', 1)[0]
    return {
        "syntax.toml": "[line\n",
        "empty.toml": "",
        "unknown_section.toml": good + "\n[extras]\nanswer = 42\n",
        "unknown_key.toml": edit("[worker]\n", "[worker]\nbatch_sise = 2\n"),
        "wrong_type.toml": edit("batch_size = 1 ", 'batch_size = "two" '),
        "speed_text.toml": _sub(good, r"speed_m_per_s = [\d.]+", 'speed_m_per_s = "fast"'),
        "live_text.toml": edit("live = true", 'live = "yes"'),
        "line_scalar.toml": "line = 5\n",
        "surface.toml": edit('surface = "top"', 'surface = "side"'),
        "line_type.toml": edit('type = "hot"', 'type = "warm"'),
        "batch_zero.toml": edit("batch_size = 1 ", "batch_size = 0 "),
        "coverage.toml": _sub(good, r"coverage_min = [\d.]+", "coverage_min = 1.5"),
        "overlap.toml": edit("tile_overlap_px = 128", "tile_overlap_px = 600"),
        "no_id.toml": edit('id = "demo-hot-1"\n', ""),
        "no_cameras.toml": _without_cameras(good),
        "dup_camera.toml": edit('id = "bottom-1"', 'id = "top-1"'),
        "results_endpoint.toml": _sub(good, r'results = "[^"]*"', 'results = "nowhere"'),
        "plc_endpoint.toml": _sub(good, r'plc = "[^"]*"', 'plc = "udp://127.0.0.1:9"'),
        "camera_endpoint.toml": edit(f'endpoint = "{camera_endpoint}"', 'endpoint = "tcp:/127.0.0.1:5"'),
        "bad_port.toml": edit(f'endpoint = "{camera_endpoint}"', 'endpoint = "tcp://127.0.0.1:99999"'),
        "rules_missing.toml": edit('rules = ""', f'rules = "{w}/no_rules.toml"'),
        "keys_missing.toml": _sub(good, r'keys_dir = "[^"]*"', f'keys_dir = "{w}/no_keys"'),
        "model_nomanifest.toml": edit('name = "hot"', f'name = "{w}/nomanifest/model.onnx"'),
        "model_badsha.toml": _sub(good, r'registry = "[^"]*"', f'registry = "{w}/badsha"'),
        "model_unknown.toml": edit('name = "hot"', 'name = "hot-nope-3"'),
        "model_notonnx.toml": _sub(good, r'registry = "[^"]*"', f'registry = "{w}/notonnx"'),
    }


def _sub(text: str, pattern: str, new: str) -> str:
    import re

    out, n = re.subn(pattern, new, text, count=1)
    assert n == 1, pattern
    return out


def _without_cameras(good: str) -> str:
    """The good config with every [[cameras]] table removed and `cameras = []` at the top."""
    head, rest = good.split("[[cameras]]", 1)
    tail = "[endpoints]" + rest.split("[endpoints]", 1)[1]
    return "cameras = []\n" + head + tail


def _line_db(path: Path) -> None:
    """A small signed line database: its audit key where `audit verify --db` looks (keys/ beside it; the
    line's keys, made with the good config, may hold it already)."""
    key_path = path.parent / "keys" / KEY_FILE_NAME
    key = load_key(key_path) if key_path.exists() else generate_key(key_path)
    with Store(path, audit_key=key) as store:
        store.register_line("demo-hot-1", "hot", 1600.0,
                            [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}])
        store.apply_batch(coil_messages("C-0", length_m=10, defects_per_frame=1.0, seed=0))
        store.grade_coil("C-0", "coil_end")


def _tamper(path: Path) -> None:
    """What someone with the file does: drop the append-only triggers, then edit a grade."""
    conn = sqlite3.connect(path)
    with conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE grades SET grade = 'prime'")
    conn.close()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """Everything the table refers to as `{w}`: a short folder of its own under /tmp (the line's ipc
    socket paths must stay short)."""
    w = Path(tempfile.mkdtemp(prefix="si-err-"))
    try:
        _build_scratch(w)
        yield w
    finally:
        if (w / "ro").exists():
            os.chmod(w / "ro", 0o755)
        shutil.rmtree(w, ignore_errors=True)


def _build_scratch(w: Path) -> None:
    # Model registries: a good one, one whose model file does not match its manifest, one whose
    # "model" is not ONNX at all (its manifest matches it), a model file without a manifest.
    models = Registry(w / "models")
    add_tiny_model(models, w, version="hot-tiny-1", activate=True)
    shutil.copytree(w / "models", w / "badsha")
    model = w / "badsha" / "hot" / "hot-tiny-1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the sha256 tells
    model.write_bytes(bytes(data))
    junk = w / "junk.onnx"
    junk.write_bytes(os.urandom(2048))
    Registry(w / "notonnx").add(junk, tiny_manifest(version="hot-junk-1"), version="hot-junk-1", activate=True)
    (w / "nomanifest").mkdir()
    shutil.copyfile(w / "models" / "hot" / "hot-tiny-1" / "model.onnx", w / "nomanifest" / "model.onnx")
    (w / "broken").mkdir()
    (w / "broken" / "registry.json").write_text("{not json")

    config = write_line_config(w, keys=True)
    good = _sub(config.read_text(), r'registry = "[^"]*"', f'registry = "{w}/models"')
    config.write_text(good)
    cfg = w / "cfg"
    cfg.mkdir()
    for name, text in _config_variants(good, w).items():
        (cfg / name).write_text(text)
    (cfg / "latin1.toml").write_bytes("[line]\nid = \"Hütte\"\n".encode("latin-1"))

    # Files and databases.
    (w / "file").write_text("a regular file, not a folder\n")
    (w / "corrupt.db").write_bytes(os.urandom(8192))
    (w / "empty.db").write_bytes(b"")
    (w / "text.db").write_text("id,coil\n1,C-1\n" * 200)
    (w / "folder.db").mkdir()
    foreign = sqlite3.connect(w / "foreign.db")
    with foreign:
        foreign.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        foreign.execute("INSERT INTO invoices (total) VALUES (12.5)")
    foreign.close()
    _line_db(w / "good.db")
    shutil.copyfile(w / "good.db", w / "tampered.db")
    damaged = bytearray((w / "good.db").read_bytes())
    damaged[4096:] = os.urandom(len(damaged) - 4096)  # page 1 (the schema) intact, every table's pages not
    (w / "damaged.db").write_bytes(bytes(damaged))
    _tamper(w / "tampered.db")
    (w / "images").mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(w / "images" / "a.png"), np.full((64, 64), 40, np.uint8))
    (w / "plant.json").write_text("[]\n")
    (w / "latin1.json").write_bytes('[{"coil_id": "Hütte"}]'.encode("latin-1"))
    (w / "number.json").write_text("42\n")
    (w / "bad_rows.json").write_text('[{"coil_id": "C-0", "thickness_mm": 99}]\n')

    (w / "ro").mkdir()
    os.chmod(w / "ro", 0o555)  # read and enter, not write


def _argv(case: Case, w: Path) -> list[str]:
    return [part.replace("{w}", str(w)) for part in case.argv.split()]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("steel-inspect") and ": error: " in line]


def _check(case: Case, w: Path, code: int, out: str, err: str, *, in_process: bool) -> None:
    expected = case.message.replace("{w}", str(w))
    assert "Traceback" not in err, err
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    if case.code != 2:
        assert expected in out + err, out + err
        return
    lines = err.strip().splitlines()
    # In-process, logging goes to pytest's capture, so stderr holds only what the user reads; a process
    # may log (its config, once) before it stops: the error is then the last line.
    if in_process:
        assert len(lines) == 1, err
    assert lines and _error_lines(lines[-1]) == [lines[-1]], err
    assert len(_error_lines(err)) == 1, err
    assert expected in lines[-1], f"{expected!r} not in {lines[-1]!r}"


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """Commands install SIGINT / SIGTERM handlers for their loops; in-process they must not outlive a case."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 74
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", [c for c in CASES if not c.unwritable], ids=lambda c: c.id)
def test_bad_input_in_process(case: Case, scratch: Path, capsys: pytest.CaptureFixture[str],
                              restore_signals: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(scratch)  # relative defaults (coil-<ID>.json, var/demo/...) land in the scratch folder
    try:
        code = main(_argv(case, scratch))
    except SystemExit as exc:  # argparse's own exits
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    _check(case, scratch, code, captured.out, captured.err, in_process=True)


def _run_process(case: Case, w: Path, prefix: Sequence[str] = (), **kwargs: Any) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([*prefix, sys.executable, "-m", "inspection", *_argv(case, w)], capture_output=True,
                            text=True, timeout=120, env=env, **kwargs)
    _check(case, w, result.returncode, result.stdout, result.stderr, in_process=False)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", [c for c in CASES if c.process], ids=lambda c: c.id)
def test_bad_input_as_a_process(case: Case, scratch: Path) -> None:
    _run_process(case, scratch, cwd=scratch)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", [c for c in CASES if c.unwritable], ids=lambda c: c.id)
def test_unwritable_folder(case: Case, scratch: Path) -> None:
    """A folder the user may not write. Root may write anywhere: under root the command runs without the
    capabilities that let it (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH), so the folder's mode holds."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): root may write into any folder")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    _run_process(case, scratch, prefix=prefix, cwd=scratch)


def test_a_line_database_still_opens(scratch: Path) -> None:
    """The checks that refuse foreign and empty files leave a real line database alone, and a new empty
    file is still a new database for the writer."""
    open_db(scratch / "good.db", readonly=True).close()
    fresh = scratch / "fresh" / "line.db"
    fresh.parent.mkdir()
    fresh.write_bytes(b"")
    open_db(fresh).close()
    open_db(fresh, readonly=True).close()
