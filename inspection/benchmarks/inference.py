"""Inference throughput and latency, side by side in one run on this machine.

Every runtime of `--runtimes` (default: ONNX Runtime's CPU provider and, when installed, OpenVINO;
plus the config's own when that is a GPU) is measured in the same run, interleaved, so their
figures compare. ``inspector_*`` and ``pipeline_*`` are the runtime the config's ``providers``
picks (``runtime``); ``inspector_runtimes`` and ``pipeline_runtimes`` hold one entry per runtime.

- ``bare``: each runtime alone on pre-loaded simulator frames, every pixel: each frame cut into
  the worker's tiles without overlap, batch sizes 1, 2, 4, 8. ``bare_runtimes`` = {model version:
  {runtime: Mpx/s by batch and at the best batch, "openvino_to_onnxruntime": ratio}} for the model
  and, for an int8 copy (`steel-inspect quantize`), its fp32 source; all pairs and batch sizes
  alternate in `--rounds` rounds and keep their best round. ``bare_mpx_per_s`` is the fastest
  runtime for the model (``bare_fastest_runtime``) among those that give the model's own results:
  an int8 copy on OpenVINO (``gives_the_models_results`` false) is measured, never the baseline.
- ``torch``: PyTorch eager, fp32 (when torch and `training/` are importable) on the same tiles, the
  same architecture (`training.train.RECIPES`); weights from the training checkpoint when
  present, else random (speed does not depend on the weights). Same batch size as the best bare.
- ``inspector``: the worker's in-process path on the same frames: the cheap first stage, its
  windows (or tiles), batched model, merge, millimetres and crops (`FrameInspector`), without any
  transport; ``inspector_model_px_share`` = pixels the model saw / frame pixels. On a CPU at the
  config's windows per run (``[worker] cpu_batch``) and, alternating with it, at the other setting (1
  or 16): ``inspector_by_cpu_batch`` (why one window per run: `inspection.cpu_runs`).
- ``pipeline``: the whole line, camera processes -> worker process -> recorder -> PLC message,
  with live cameras paced at a steady offered load (`--offered-mpx-per-s`, default 40: one
  surface of a 2 m hot strip at 20 m/s, 1 mm/px). Measured: Mpx/s inspected over the run,
  frames dropped by the cameras (counted, never silent) and latency from capture to the PLC
  defect message (a subscriber on the PLC endpoint) and from capture to the database row.

Latency breakdown (``latency_breakdown_ms``, each pipeline load point): where the time from capture
to the PLC goes, per stage (camera -> worker, batching, inference, worker send, worker -> recorder,
recorder wait, commit, publish, PLC transport), mean / p50 / p99 in ms over the PLC defect messages,
from the stamps each process takes (`inspection.stage_times`, which defines every stage and what
"capture" is: the frame's last line); ``frame_period_ms`` is how much older a frame's first line is.
Also printed as a table on stderr. ``--pipeline-only`` skips bare, torch and inspector;
``--set KEY=VALUE`` changes the line for every pipeline run; ``--variant NAME [KEY=VALUE ...]``
(repeatable) runs each load point once per variant, the variants alternating, ``--repeat`` times,
into ``latency_variants`` (this machine's load changes from minute to minute: only runs side by side
compare).

``pipeline_to_bare_ratio`` = pipeline Mpx/s / the fastest bare runtime's Mpx/s (the first stage
lets the pipeline exceed 1 when most of the strip is clean), for the config's runtime; each entry of
``pipeline_runtimes`` has its own ``pipeline_to_fastest_bare_ratio``; ``pipeline_to_inspector_ratio``
isolates what the processes and sockets cost. Both compare like with like only with ``--workers 1``: the bare and
inspector figures run in this one process with the worker's thread count
(``bare_intra_op_threads``), while K workers use K processes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from inspection.arguments import non_negative_int, positive_float, positive_int
from inspection.benchmarks._line import hardware, run_line, scratch_line, simulated_frames
from inspection.benchmarks._runtimes import (
    RUNTIMES,
    bare_side_by_side,
    batched,
    fastest,
    make_detector,
    measure,
    runtime_label,
    runtimes_to_run,
)
from inspection.benchmarks._runtimes import setting as runtime_setting
from inspection.line.process import StopFlag
from inspection.plc_tap import PlcTap

HELP = ("throughput (Mpx/s) and latency, each runtime side by side (ONNX Runtime, OpenVINO): bare, PyTorch, "
        "the worker in-process, the whole pipeline")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--model", default=None, help="model name or version (default: the config's)")
    parser.add_argument("--frames", type=positive_int, default=12,
                        help="pre-loaded frames for bare / torch / inspector")
    parser.add_argument("--seconds", type=positive_float, default=8.0,
                        help="time per bare / torch / inspector measurement")
    parser.add_argument("--offered-mpx-per-s", type=positive_float, nargs="+", default=[40.0], metavar="MPX_PER_S",
                        help="pipeline load, all cameras (default 40); more values add load points, each a "
                             "separate run listed in pipeline_load_points; the first one gives the headline keys")
    parser.add_argument("--pipeline-seconds", type=positive_float, default=30.0, help="length of the pipeline run")
    parser.add_argument("--workers", type=positive_int, default=1, help="pipeline worker processes (default 1)")
    parser.add_argument("--threads", type=non_negative_int, default=None,
                        help="threads per worker and runtime (ONNX Runtime's intra-op threads, OpenVINO's "
                             "INFERENCE_NUM_THREADS; default: the config's; 0 = one per core)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="bare: rounds over every runtime, model and batch size, best of each (default 3)")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--runtimes", nargs="+", choices=tuple(RUNTIMES), default=None,
                        help="CPU runtimes measured side by side (default: onnxruntime, and openvino when installed)")
    parser.add_argument("--pipeline-only", action="store_true", help="only the pipeline (no bare, torch, inspector)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every pipeline run (TOML value), e.g. worker.batch_size=1")
    parser.add_argument("--variant", action="append", nargs="+", default=[], metavar="NAME_OR_KEY=VALUE",
                        help="a named set of config overrides (NAME KEY=VALUE ...); several alternate at each load")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="with --variant: rounds over every load and variant (default 1)")
    parser.add_argument("--beside", nargs="+", default=[], metavar="MODEL",
                        help="other models (names or versions) measured bare on the same tiles and batch, "
                             "alternating with the main model in rounds (a new model beside the one it replaces)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.config import load_config
    from inspection.detector import fp32_source
    from inspection.registry import Registry

    config = load_config(args.config, {} if args.threads is None else {"worker.intra_op_threads": args.threads})
    stop = StopFlag()  # one for every line this benchmark runs (`run_line`)
    if args.pipeline_only or args.variant:
        return _pipelines_only(args, config, stop)
    registry = Registry(config.model.registry)
    manifest = registry.resolve(args.model or config.model.name)
    detector, runtimes = runtimes_to_run(args.runtimes, config, manifest)
    main = runtime_label(detector)
    frames, _ = simulated_frames(config, args.frames, seed=99)
    tile = config.worker.tile_px
    tiles = [f.pixels[y:y + tile, x:x + tile] for f in frames for y in range(0, f.height, tile)
             for x in range(0, f.width, tile)]
    frame_mpx = sum(f.pixels.size for f in frames) / 1e6
    result: dict[str, Any] = {"model": manifest.version, "providers": detector.providers, "runtime": main,
                              "tile_px": tile,
                              "bare_intra_op_threads": config.worker.intra_op_threads or "runtime default",
                              "frame": [frames[0].height, frames[0].width], "hardware": hardware()}
    pairs = {(label, manifest.version): det for label, det in runtimes.items()}
    fp32 = fp32_source(manifest)  # an int8 model: its fp32 source (checked) on every runtime too, interleaved
    if fp32 is not None:
        pairs.update({(label, fp32.version): make_detector(fp32, runtime_setting(label, config), config)
                      for label in runtimes})
    bare = bare_side_by_side(pairs, tiles, frame_mpx, args.seconds, args.rounds)
    mine = bare[manifest.version]
    best = fastest(mine)  # the baseline: the fastest runtime that gives the model's own results
    result.update(bare_runtimes=bare, bare_fastest_runtime=best, bare_rounds=args.rounds,
                  bare_by_batch=mine[best]["by_batch"], bare_best_batch=mine[best]["best_batch"],
                  bare_mpx_per_s=mine[best]["mpx_per_s"])
    if fp32 is not None:
        result["bare_fp32_source"] = fp32.version
        result["bare_fp32_mpx_per_s"] = bare[fp32.version][fastest(bare[fp32.version])]["mpx_per_s"]
    if args.beside:
        result["beside"] = _beside(config, detector, args.beside, tiles, mine[main]["best_batch"], frame_mpx,
                                   args.seconds)
    result.update(_torch(manifest, tiles, mine[best]["best_batch"], frame_mpx, args.seconds))
    inspectors = {label: {**_inspector(config, det, frames, frame_mpx, args.seconds, args.rounds),
                          "gives_the_models_results": mine[label]["gives_the_models_results"]}
                  for label, det in runtimes.items()}
    result["inspector_runtimes"] = inspectors
    result.update({k: v for k, v in inspectors[main].items() if k != "gives_the_models_results"})
    if not args.skip_pipeline:
        pipelines: dict[str, Any] = {}
        for label in runtimes:
            points = [_pipeline(args, config, load, runtime_setting(label, config), _settings(args.set), stop)
                      for load in args.offered_mpx_per_s]
            entry = {**points[0], "gives_the_models_results": mine[label]["gives_the_models_results"],
                     "pipeline_to_fastest_bare_ratio":
                     round(points[0]["pipeline_mpx_per_s"] / result["bare_mpx_per_s"], 3)}
            if len(points) > 1:
                entry["pipeline_load_points"] = points
            pipelines[label] = entry
        result["pipeline_runtimes"] = pipelines
        result.update({k: v for k, v in pipelines[main].items()
                       if k not in ("pipeline_to_fastest_bare_ratio", "gives_the_models_results")})
        result["pipeline_to_bare_ratio"] = round(result["pipeline_mpx_per_s"] / result["bare_mpx_per_s"], 3)
        result["pipeline_to_inspector_ratio"] = round(result["pipeline_mpx_per_s"] / result["inspector_mpx_per_s"], 3)
    result["command"] = "steel-inspect bench inference"
    return result


def _beside(config: Any, main: Any, names: list[str], tiles: list[np.ndarray], batch: int, frame_mpx: float,
            seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Bare Mpx/s of `main` and each other model on the same tiles and batch size, measured in
    alternating rounds (best round each), and each model's ratio to `main`: this machine's load
    changes from minute to minute, so only rates measured side by side compare."""
    from inspection.registry import Registry

    models = {main.manifest.version: main}
    for name in names:
        manifest = Registry(config.model.registry).resolve(name)
        models[manifest.version] = make_detector(manifest, config.worker.providers, config)
    best: dict[str, float] = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for version, detector in models.items():
            rate = measure(lambda d=detector: batched(d, tiles, batch), frame_mpx, seconds / rounds)
            best[version] = max(best[version], rate)
    first = main.manifest.version
    return {"batch": batch, "rounds": rounds, "mpx_per_s": {v: round(r, 2) for v, r in best.items()},
            "ratio_to": first, "ratio": {v: round(r / best[first], 3) for v, r in best.items()}}


def _torch(manifest: Any, tiles: list[np.ndarray], batch: int, frame_mpx: float, seconds: float) -> dict[str, Any]:
    try:
        import torch

        from training.train import RECIPES, build_model
    except ImportError as exc:
        return {"torch_mpx_per_s": None, "torch_note": f"torch not installed ({exc})"}
    model = build_model(RECIPES[manifest.line_type]).eval()
    checkpoint = Path("var/train") / manifest.line_type / "best.pt"
    weights = "random (checkpoint not found; speed does not depend on weights)"
    if checkpoint.is_file():
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["ema"])
        weights = str(checkpoint)
    multiple = manifest.size_multiple
    padded = [np.pad(t, ((0, -t.shape[0] % multiple), (0, -t.shape[1] % multiple)), mode="edge") for t in tiles]
    by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
    for t in padded:
        by_shape.setdefault(t.shape, []).append(t)
    batches = [torch.from_numpy(np.stack(group[i:i + batch])[:, None]) for group in by_shape.values()
               for i in range(0, len(group), batch)]
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def step() -> None:
        with torch.no_grad():
            for b in batches:
                model.detect(b)

    rate = measure(step, frame_mpx, seconds)
    return {"torch_mpx_per_s": round(rate, 2), "torch_weights": weights, "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def _inspector(config: Any, detector: Any, frames: list[Any], frame_mpx: float, seconds: float,
               rounds: int = 3) -> dict[str, Any]:
    """The worker's in-process path at the config's windows per run on a CPU (``[worker] cpu_batch``),
    and beside it, alternating in `rounds` rounds (best of each), at the other setting (1 or 16):
    ``inspector_by_cpu_batch``, the throughput side of `inspection.cpu_runs`."""
    from inspection.frame_inspector import FrameInspector
    from inspection.worker import inspector_settings

    inspector = FrameInspector(detector, inspector_settings(config))
    shares = []

    def step() -> None:
        results = inspector.inspect(frames)
        shares.append(sum(r.model_px for r in results) / sum(r.frame.pixels.size for r in results))

    mine = config.worker.cpu_batch
    batches = [mine] if detector.on_gpu else [mine, 16 if mine != 16 else 1]
    rates: dict[int, float] = {}
    for round_ in range(rounds):
        for batch in batches:
            detector.max_batch = batch
            rates[batch] = max(rates.get(batch, 0.0), measure(step, frame_mpx, seconds / rounds, warm_up=round_ == 0))
    # Pixels the model saw / frame pixels: the grid's overlapping tiles make "none" about 1.9 on
    # 1600 x 1024 frames; the first stage's windows bring it down.
    return {"inspector_mpx_per_s": round(rates[mine], 2), "inspector_cpu_batch": mine,
            "inspector_by_cpu_batch": {str(b): round(r, 2) for b, r in rates.items()},
            "inspector_first_stage": config.worker.first_stage,
            "inspector_model_px_share": round(float(np.mean(shares)), 3)}


def _pipelines_only(args: argparse.Namespace, config: Any, stop: StopFlag) -> dict[str, Any]:
    """The pipeline alone at every load (`--pipeline-only`), or every `--variant` at every load,
    alternating, `--repeat` rounds: the latency side by side."""
    from inspection.benchmarks._runtimes import runtimes_to_run
    from inspection.registry import Registry

    manifest = Registry(config.model.registry).resolve(args.model or config.model.name)
    detector, _ = runtimes_to_run(args.runtimes, config, manifest)
    providers = runtime_setting(runtime_label(detector), config)
    base = _settings(args.set)
    result: dict[str, Any] = {"model": manifest.version, "runtime": runtime_label(detector), "hardware": hardware(),
                              "set": base, "command": "steel-inspect bench inference"}
    if not args.variant:
        points = [_pipeline(args, config, load, providers, base, stop) for load in args.offered_mpx_per_s]
        result.update(points[0])
        result["pipeline_load_points"] = points
        return result
    variants = {items[0]: _settings(items[1:]) for items in args.variant}
    runs: list[dict[str, Any]] = []
    for round_ in range(args.repeat):
        for load in args.offered_mpx_per_s:
            for name, overrides in variants.items():
                point = _pipeline(args, config, load, providers, {**base, **overrides}, stop)
                runs.append({"variant": name, "round": round_ + 1, **point})
    result["variants"] = variants
    result["latency_variants"] = runs
    result["latency_variants_summary"] = _variant_summary(runs)
    print(_variant_table(result["latency_variants_summary"]), file=sys.stderr)
    return result


def _variant_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant and load: medians over the rounds, drops added up."""
    out = []
    for key in dict.fromkeys((r["variant"], r["pipeline_offered_mpx_per_s"]) for r in runs):
        mine = [r for r in runs if (r["variant"], r["pipeline_offered_mpx_per_s"]) == key]

        def median(field: str, rows: list[dict[str, Any]] = mine) -> float | None:
            values = [r[field] for r in rows if r.get(field) is not None]
            return round(float(np.median(values)), 1) if values else None

        out.append({"variant": key[0], "offered_mpx_per_s": key[1], "rounds": len(mine),
                    "pipeline_mpx_per_s": median("pipeline_mpx_per_s"),
                    "frames_dropped_by_cameras": sum(r["pipeline_frames_dropped_by_cameras"] for r in mine),
                    "frames_lost": sum(r.get("pipeline_frames_lost") or 0 for r in mine),
                    "latency_ms_p50": median("latency_ms_p50"), "latency_ms_p99": median("latency_ms_p99"),
                    "latency_ms_p99_each": [r["latency_ms_p99"] for r in mine]})
    return out


def _variant_table(summary: list[dict[str, Any]]) -> str:
    lines = [f"{'variant':<16}{'offered':>8}{'Mpx/s':>8}{'dropped':>8}{'p50':>8}{'p99':>8}  p99 each round (ms)"]
    for s in summary:
        lines.append(f"{s['variant']:<16}{s['offered_mpx_per_s']:>8}{s['pipeline_mpx_per_s'] or 0:>8.1f}"
                     f"{s['frames_dropped_by_cameras']:>8}{s['latency_ms_p50'] or 0:>8.1f}"
                     f"{s['latency_ms_p99'] or 0:>8.1f}  {s['latency_ms_p99_each']}")
    return "\n".join(lines)


def _settings(items: list[str]) -> dict[str, Any]:
    from inspection.benchmarks.e2e import _settings as parse

    return parse(items)


def _pipeline(args: argparse.Namespace, config: Any, offered_mpx_per_s: float, providers: str,
              overrides: dict[str, Any] | None, stop: StopFlag) -> dict[str, Any]:
    from inspection.security import ensure_keys
    from inspection.stage_times import breakdown, read, table

    with tempfile.TemporaryDirectory(prefix="steel-bench-") as tmp:
        threads = {} if args.threads is None else {"worker.intra_op_threads": args.threads}
        settings = {"worker.providers": providers, **threads, **(overrides or {}),
                    "records.stage_log": str(Path(tmp) / "stages.jsonl")}
        shaped = scratch_line(args.config, Path(tmp), **settings)  # frame height and width as overridden
        px_per_m = sum(c.width_px * 1000.0 / c.mm_per_px_along for c in shaped.cameras)
        speed = offered_mpx_per_s * 1e6 / px_per_m
        camera = shaped.cameras[0]
        frames = max(4, int(args.pipeline_seconds * speed * 1000.0 / (camera.frame_height_px
                                                                      * camera.mm_per_px_along)))
        line = scratch_line(args.config, Path(tmp), **{"line.speed_m_per_s": speed, **settings})
        ensure_keys(line)  # the tap is the line's PLC client: with CURVE on it needs the keys first
        tap = PlcTap.from_config(line, topic="defect")
        summary = run_line(line, stop, workers=args.workers, max_frames=frames,
                           camera_overrides={"realtime": True, "seed": 5})
        latencies = _latencies_ms(tap)
        arrivals = {m["defect_id"]: int(arrived * 1e9) for arrived, m in tap.messages if "defect_id" in m}
        stages = breakdown(read(Path(tmp) / "stages.jsonl"), arrivals)
    frame_period_ms = camera.frame_height_px * camera.mm_per_px_along / speed  # mm / (m/s) = ms
    title = (f"capture -> PLC at {offered_mpx_per_s} Mpx/s offered"
             + (f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else ""))
    print(table(stages, title), file=sys.stderr)
    inspected_mpx = summary.get("frames_inspected", 0) * camera.width_px * camera.frame_height_px / 1e6
    # Throughput from the first capture to the last record (model loading and shutdown left out).
    seconds = summary.get("inspecting_s") or summary["seconds"]
    return {
        "pipeline_mpx_per_s": round(inspected_mpx / seconds, 2),
        "pipeline_basis": "frames inspected x frame pixels / (last record - first capture)",
        "pipeline_offered_mpx_per_s": offered_mpx_per_s,
        "pipeline_providers": providers,
        "pipeline_workers": args.workers,
        "pipeline_intra_op_threads": line.worker.intra_op_threads,
        "pipeline_line_speed_m_per_s": round(speed, 2),
        "pipeline_frames_sent": summary["frames_sent"],
        "pipeline_frames_dropped_by_cameras": summary["frames_dropped_by_cameras"],
        "pipeline_frames_inspected": summary.get("frames_inspected"),
        "pipeline_seconds": summary["seconds"],
        "pipeline_inspecting_s": summary.get("inspecting_s"),
        "latency_ms_p50": _pct(latencies, 50),
        "latency_ms_p99": _pct(latencies, 99),
        "latency_basis": f"capture (the frame's last line) -> PLC defect message at the subscriber, "
                         f"{len(latencies)} messages",
        "latency_ms_capture_to_record": summary.get("latency_ms_capture_to_record"),
        "latency_breakdown_ms": stages,
        "frame_height_px": camera.frame_height_px,
        "frame_period_ms": round(frame_period_ms, 1),
        "pipeline_frames_lost": summary.get("frames_lost"),
        "pipeline_overrides": overrides or {},
    }


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _latencies_ms(tap: PlcTap) -> list[float]:
    """Arrival minus the defect's capture time, per PLC defect message."""
    import datetime as dt

    tap.close()
    return [(arrived - dt.datetime.fromisoformat(m["captured_time"].replace("Z", "+00:00")).timestamp()) * 1000.0
            for arrived, m in tap.messages if m.get("captured_time")]
