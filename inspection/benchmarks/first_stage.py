"""What the cheap first stage keeps and what it lets through, per threshold, without the model.

The first stage (`inspection.candidates`) decides which tiles the network sees. Its two costs pull
against each other: tiles passed (CPU time of the model) and defects lost (a defect whose tiles are
skipped can never be found). This bench measures both on the line's simulated frames (real
defects of the dataset's test split pasted at known positions) for a list of ``k_sigma`` values,
so a line can be calibrated from figures instead of guesses:

Both ways of using the flagged regions are measured (`inspection.frame_inspector`): ``candidates``
(the grid tiles touching a region) and ``windows`` (windows sized to the regions, `tiling.windows_around`):

- ``model_px_share``: pixels the network must process / frame pixels (overlaps count twice, so a
  full grid of overlapping tiles is above 1);
- ``model_px_share_clean``: the same on frames without any pasted defect (clean strip dominates a
  real line, so this is the share that sets the model's load);
- ``defects_whole``: share of ground-truth defects lying wholly inside at least one passed tile or
  window (the model sees the entire defect);
- ``defects_touched``: share with any passed tile or window overlapping them.

The e2e bench (`steel-inspect bench e2e`) then tells what the model makes of those tiles.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from inspection.arguments import non_negative_float, non_negative_int, positive_float, positive_int
from inspection.benchmarks._line import BENCH_SIMULATOR, hardware, simulated_frames
from inspection.errors import SteelInspectError

MODES = ("candidates", "windows")
HELP = "first stage: share of tiles passed vs share of real defects kept, per k_sigma, on simulated frames"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--frames", type=positive_int, default=120, help="simulated frames of the first camera")
    parser.add_argument("--k-sigma", type=positive_float, nargs="+", default=[2.5, 3.0, 3.5, 4.0, 5.0, 6.0])
    parser.add_argument("--defects-per-100m", type=non_negative_float, default=40.0)
    parser.add_argument("--seed", type=non_negative_int, default=21)
    parser.add_argument("--split", default="val", help="dataset split the pasted defects come from (default val: "
                        "calibrate on val, report on test with `bench e2e`)")
    parser.add_argument("--context-px", type=non_negative_int, default=None,
                        help="window context (default: the config's)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.candidates import CandidateSettings, find_candidates
    from inspection.config import load_config
    from inspection.tiling import tile_grid, tiles_touching, windows_around

    if args.frames < 1 or any(k <= 0 for k in args.k_sigma):
        raise SteelInspectError(f"first-stage bench: expected --frames >= 1 and k_sigma > 0, got {args.frames}, "
                                f"{args.k_sigma}")
    config = load_config(args.config, {"simulator.defects_per_100m": args.defects_per_100m, **BENCH_SIMULATOR,
                                       "simulator.split": args.split})
    context = config.worker.window_context_px if args.context_px is None else args.context_px
    camera, worker = config.cameras[0], config.worker
    frames, truth = simulated_frames(config, args.frames, args.seed)
    by_frame: dict[tuple[str, int], list[list[float]]] = {}
    for row in truth:
        by_frame.setdefault((row["coil"], row["frame_index"]), []).append(row["box_px"])
    frame_mpx = sum(f.pixels.size for f in frames) / 1e6
    points = []
    for k in args.k_sigma:
        settings = CandidateSettings(k_sigma=k)
        point: dict[str, Any] = {"k_sigma": k}
        counts = {mode: dict.fromkeys(("px", "clean_px", "whole", "touched"), 0) for mode in MODES}
        frame_px = clean_px = boxes = 0
        seconds = 0.0
        for frame in frames:
            grid = tile_grid(frame.width, frame.height, worker.tile_px, worker.tile_overlap_px)
            started = time.perf_counter()
            regions = find_candidates(frame.pixels, settings)
            seconds += time.perf_counter() - started
            chosen = {"candidates": tiles_touching(grid, regions),
                      "windows": windows_around(regions, frame.width, frame.height, context_px=context,
                                                min_px=min(256, worker.tile_px))}
            gt = by_frame.get((frame.coil, frame.index), [])
            frame_px += frame.pixels.size
            clean_px += 0 if gt else frame.pixels.size
            boxes += len(gt)
            for mode, tiles in chosen.items():
                c = counts[mode]
                px = sum(t.width * t.height for t in tiles)
                c["px"] += px
                c["clean_px"] += 0 if gt else px
                for x1, y1, x2, y2 in gt:
                    c["whole"] += any(t.x <= x1 and t.y <= y1 and x2 <= t.x + t.width and y2 <= t.y + t.height
                                      for t in tiles)
                    c["touched"] += any(t.x < x2 and x1 < t.x + t.width and t.y < y2 and y1 < t.y + t.height
                                        for t in tiles)
        for mode, c in counts.items():
            point[mode] = {"model_px_share": round(c["px"] / frame_px, 3),
                           "model_px_share_clean": round(c["clean_px"] / clean_px, 3) if clean_px else None,
                           "defects_whole": round(c["whole"] / boxes, 3) if boxes else None,
                           "defects_touched": round(c["touched"] / boxes, 3) if boxes else None}
        point["first_stage_mpx_per_s"] = round(frame_mpx / seconds, 1)
        points.append(point)
    return {"line": config.id, "line_type": config.type, "camera": camera.id, "frames": len(frames),
            "clean_frames": sum(1 for f in frames if (f.coil, f.index) not in by_frame),
            "ground_truth_boxes": len(truth), "tile_px": worker.tile_px, "tile_overlap_px": worker.tile_overlap_px,
            "configured_k_sigma": worker.candidate_k_sigma, "split": args.split, "window_context_px": context,
            "points": points, "hardware": hardware(),
            "command": "steel-inspect bench first_stage"}
