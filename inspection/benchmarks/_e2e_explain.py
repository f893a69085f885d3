"""`bench e2e --explain`: where each missed ground-truth defect and each false defect is lost.

The line run by `bench e2e` keeps only what the recorder wrote. To see inside it, the frames are
rendered again in this process (the simulator is deterministic: same config, seed and frame
count give the same pixels) and sent through the worker's own code, step by step: the first
stage's model views (`FrameInspector.plan`), the model with a low score floor, each class's
operating threshold (`Detector.passes`), and the merge of what several views saw
(`FrameInspector.merge`). `replay` reports how often the replay's per-frame defect count equals
what the recorder holds, which proves the replay is the same line.

Every ground-truth defect the records miss (IoU < `iou` with every recorded defect) gets the first
cause along the pipeline, judged on its fragment(s) in their frame(s):

- ``first_stage``: no model view covers at least half of the box;
- ``no_detection``: no detection of any class and any score >= the floor overlaps it (IoU >= 0.1);
- ``below_threshold``: a detection overlaps it at IoU >= `iou`, but below its class's threshold;
- ``box_mismatch``: detections above the threshold overlap it, none at IoU >= `iou` (box too
  small, too large or split in parts) while it lies wholly inside one view;
- ``tile_seam``: the same, for a box that no single view holds wholly (cut by a view's edge);
- ``merged_away``: a detection matched it before the merge of views, none after;
- ``frame_seam``: found in its frame(s), but cut by a frame seam and not matched once the
  recorder joined the fragments;
- ``seam_joined``: not cut by a seam, found in its frame and recorded (a fragment as recorded
  matches it), but the recorder joined that fragment with another defect's across a frame seam, so
  the merged box no longer matches;
- ``records``: found in its frame, yet missing from the records (a loss between worker and database).

Every recorded defect that is not the best match of a ground-truth defect is one of:

- ``plain_texture``: it overlaps no ground-truth box;
- ``near_defect``: it overlaps one, but at IoU < `iou` (a fragment, or a box of the wrong size);
- ``duplicate``: IoU >= `iou` with a defect that another record of the same class already matched;
- ``other_class``: the same, with another class than the record that matched.

The first two are the headline's false defects; the last two are extra records on a real defect.
Of the ``near_defect`` records, ``fragments`` counts those lying at least half (`AREA_SHARE`) inside
the ground-truth boxes of their own class: a piece of a labelled area, cut into other boxes by the
labels than by the model (NEU-DET labels one crazing area as several overlapping boxes), not a
false alarm on plain strip. Beside it, ``labels`` counts per class the ground-truth boxes that
overlap another box of their class, so the two can be read together. Neither changes the headline.

The decisive control (``control``): for each whole ground-truth box whose pasted image lies wholly
inside one frame, the model runs on (a) the dataset image itself, as `steel-inspect evaluate` does,
and (b) the pasted image cut back out of the frame at its dataset size; a box counts as found when
a detection at its class's operating threshold overlaps it at IoU >= `iou`. Beside them, the line's
own rate on the same boxes. dataset > cut-out means pasting into strip changes how the model sees
the defect; cut-out > line means the line (views, merge, records) loses what the model can find.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from inspection.benchmarks._causes import AREA_SHARE, cause_table, print_cause_tables, share_inside
from inspection.benchmarks._matching import best_matches, ground_truth_defects, iou, read_records
from inspection.config import LineConfig

log = logging.getLogger(__name__)

SCORE_FLOOR = 0.05  # detections below this are noise for the attribution
TOUCH_IOU = 0.1  # "a detection overlaps it"
VIEW_SHARE = 0.5  # a view "covers" a box when it holds this share of the box's area
MISSED_CAUSES = ("first_stage", "no_detection", "below_threshold", "box_mismatch", "tile_seam", "merged_away",
                 "frame_seam", "seam_joined", "records")
FALSE_CAUSES = ("plain_texture", "near_defect", "duplicate", "other_class")


def _inside_share(box: np.ndarray, view: tuple[int, int, int, int]) -> float:
    w = min(box[2], view[2]) - max(box[0], view[0])
    h = min(box[3], view[3]) - max(box[1], view[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return float(w * h / area) if w > 0 and h > 0 and area > 0 else 0.0


def _bestiou(box: np.ndarray, boxes: np.ndarray) -> float:
    return max((iou(box, b) for b in boxes), default=0.0)


class FrameTrace:
    """What the worker's code did with one frame, step by step (frame pixels)."""

    def __init__(self, inspector: Any, image: np.ndarray, tiles: list[Any], found: list[Any],
                 overlap_rows: int = 0) -> None:
        from inspection.frame_inspector import new_rows_only, view_boxes

        # in the coordinates of the frame's new rows, as the ground truth and the records are: a frame
        # with overlap is merged whole, as the worker merges it, then keeps what the worker keeps
        # (`new_rows_only`), raw detections and merged boxes alike
        self.views = [(x1, y1 - overlap_rows, x2, y2 - overlap_rows) for x1, y1, x2, y2 in (t.box for t in tiles)]
        raw = view_boxes(tiles, found, image.shape)
        passed = inspector.detector.passes(raw[1], raw[2]) if len(raw[1]) else np.zeros(0, bool)
        merged = inspector.merge(*(part[passed] for part in raw[:5]))
        if overlap_rows:
            *raw, passed = new_rows_only((*raw, passed), image, overlap_rows)[0]
            merged = new_rows_only(merged, image, overlap_rows)[0]
        self.boxes, self.scores, self.labels = raw[:3]
        self.passed = passed
        self.merged = merged[0]

    def fragment_cause(self, box: np.ndarray, stage: str, iou_min: float) -> str | None:
        """The first step that loses this box, or None when the frame's merged output matches it."""
        shares = [_inside_share(box, v) for v in self.views]
        if stage != "none" and max(shares, default=0.0) < VIEW_SHARE:
            return "first_stage"
        ious = np.array([iou(box, b) for b in self.boxes]) if len(self.boxes) else np.zeros(0)
        if not len(ious) or ious.max() < TOUCH_IOU:
            return "no_detection"
        if not (ious[self.passed] >= iou_min).any():
            if (ious >= iou_min).any():
                return "below_threshold"
            return "box_mismatch" if max(shares, default=0.0) >= 1.0 else "tile_seam"
        return None if _bestiou(box, self.merged) >= iou_min else "merged_away"


def replay_traces(line: LineConfig, frames: int, seed: int) -> tuple[dict[tuple[str, str, int], Any], dict]:
    """Render the first `frames` frames of every camera again and trace them through the worker's
    code; returns traces by (coil, camera, frame index) and the frames' pixels by the same key."""
    from cameras import open_source
    from cameras.pump import FrameOverlap
    from inspection.frame import Frame
    from inspection.frame_inspector import FrameInspector, to_uint8
    from inspection.registry import Registry
    from inspection.worker import InferenceWorker, inspector_settings

    # the worker's own choice of model for the line (configured name or the registry's active one)
    detector = InferenceWorker(line, Registry(), lambda _timeout: None, lambda _message: None).load(line.type).detector
    inspector = FrameInspector(detector, inspector_settings(line))
    traces, pixels = {}, {}
    for camera in line.cameras:
        overlap = FrameOverlap(camera.overlap_px)  # as the camera process sends them (`cameras.pump`)
        with open_source(line, camera, realtime=False, seed=seed) as source:
            count = 0
            for message in source:
                if not isinstance(message, Frame):
                    continue
                message = overlap.apply(message)
                image = to_uint8(message.pixels, inspector.settings.uint16_shift)
                tiles, _ = inspector.plan(image, message.overlap_rows)
                crops = [image[t.y:t.y + t.height, t.x:t.x + t.width] for t in tiles]
                found = detector.detect(crops, min_score=SCORE_FLOOR) if crops else []
                key = (message.coil, camera.id, message.index)
                traces[key] = FrameTrace(inspector, image, tiles, found, message.overlap_rows)
                pixels[key] = image[message.overlap_rows:]
                count += 1
                if count >= frames:
                    break
    return traces, {"pixels": pixels, "detector": detector}


def missed_cause(fragment_causes: list[str | None], cut_by_seam: bool, fragment_recorded: bool) -> str:
    """The cause of a missed ground-truth defect (module docstring): the first step that lost one of its
    fragments in its frame; when every fragment was found there, what happened after the worker."""
    lost = [c for c in fragment_causes if c is not None]
    if lost:
        return lost[0]
    if cut_by_seam:
        return "frame_seam"
    return "seam_joined" if fragment_recorded else "records"


def explain(line: LineConfig, truth: list[dict[str, Any]], db: Path, *, frames: int, seed: int, stage: str,
            iou_min: float, datasets_dir: Path | None) -> dict[str, Any]:
    """The attribution tables of the module docstring, as JSON-able figures."""
    traces, extra = replay_traces(line, frames, seed)
    detector = extra["detector"]
    records, _, _ = read_records(db)
    gts = ground_truth_defects(truth)
    matches = best_matches(gts, records)
    as_recorded = best_matches(gts, read_records(db, merge_seams=False)[0])  # fragment by fragment
    missed: dict[str, Counter] = defaultdict(Counter)
    for t, (best, best_iou), (_, fragment_iou) in zip(gts, matches, as_recorded, strict=True):
        if best is not None and best_iou >= iou_min:
            continue
        causes = []
        for row in t["rows"]:
            trace = traces.get((row["coil"], row["camera"], row["frame_index"]))
            if trace is None:  # cannot happen: the replay renders the same frames
                causes.append("records")
                continue
            causes.append(trace.fragment_cause(np.array(row["box_px"], float), stage, iou_min))
        missed[t["class"]][missed_cause(causes, t["seam"], fragment_iou >= iou_min)] += 1
    false, fragments = _false_defects(gts, matches, records, iou_min)
    return {
        "iou": iou_min, "score_floor": SCORE_FLOOR,
        "thresholds": dict(zip(detector.manifest.classes, (round(float(v), 3) for v in detector.thresholds),
                               strict=True)),
        "missed": cause_table(missed, MISSED_CAUSES, sum(1 for t in gts)),
        "false": {**cause_table(false, FALSE_CAUSES, None), "fragments": fragments, "labels": _labels_overlapping(gts)},
        "control": _control(gts, matches, extra["pixels"], detector, iou_min, datasets_dir),
        "replay": _replay_check(traces, db),
    }


def _false_defects(gts: list[dict[str, Any]], matches: list[tuple[int | None, float]],
                   records: dict[tuple[str, str], list[tuple[str, np.ndarray]]], iou_min: float
                   ) -> tuple[dict[str, Counter], dict[str, int]]:
    """Per class, the causes of the records that match no ground-truth defect (module docstring), and
    how many of the ``near_defect`` ones lie at least `AREA_SHARE` inside the boxes of their own class."""
    matched: dict[tuple[str, str, int], str] = {}
    for t, (best, best_iou) in zip(gts, matches, strict=True):
        if best is not None and best_iou >= iou_min:
            matched[(t["coil"], t["camera"], best)] = records[(t["coil"], t["camera"])][best][0]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in gts:
        by_key[(t["coil"], t["camera"])].append(t)
    out: dict[str, Counter] = defaultdict(Counter)
    fragments: Counter = Counter()
    for key, recs in records.items():
        for i, (cls, box) in enumerate(recs):
            if (*key, i) in matched:
                continue
            ious = [(iou(t["box"], box), t) for t in by_key.get(key, [])]
            best_iou, best_t = max(ious, key=lambda p: p[0], default=(0.0, None))
            if best_t is None or best_iou <= 0.0:
                out[cls]["plain_texture"] += 1
            elif best_iou < iou_min:
                out[cls]["near_defect"] += 1
                own = [t["box"] for t in by_key.get(key, []) if t["class"] == cls]
                fragments[cls] += share_inside(box, own) >= AREA_SHARE
            else:
                winner = next((c for (k0, k1, j), c in matched.items() if (k0, k1) == key
                               and iou(best_t["box"], recs[j][1]) >= iou_min), None)
                out[cls]["duplicate" if winner == cls else "other_class"] += 1
    return out, {cls: n for cls, n in sorted(fragments.items()) if n}


def _labels_overlapping(gts: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per class, the ground-truth boxes and how many of them overlap another box of their class."""
    out: dict[str, Counter] = defaultdict(Counter)
    for i, t in enumerate(gts):
        out[t["class"]]["boxes"] += 1
        out[t["class"]]["overlapping"] += any(
            j != i and (u["coil"], u["camera"], u["class"]) == (t["coil"], t["camera"], t["class"])
            and iou(t["box"], u["box"]) > 0.0 for j, u in enumerate(gts))
    return {cls: {"boxes": c["boxes"], "overlapping": c["overlapping"]} for cls, c in sorted(out.items())}


def _control(gts: list[dict[str, Any]], matches: list[tuple[int | None, float]], pixels: dict, detector: Any,
             iou_min: float, datasets_dir: Path | None) -> dict[str, Any]:
    from inspection.datasets import dataset_folder, read_image

    cases = []
    for t, (best, best_iou) in zip(gts, matches, strict=True):
        row = t["rows"][0]
        if t["seam"] or row.get("source") != "dataset" or "patch_xy" not in row or datasets_dir is None:
            continue
        image_path = dataset_folder(datasets_dir, row["dataset"]) / "images" / row["image"]
        frame = pixels.get((row["coil"], row["camera"], row["frame_index"]))
        if frame is None or not image_path.is_file():
            continue
        x, y = row["patch_xy"]
        source = read_image(image_path)
        h, w = source.shape
        if x < 0 or y < 0 or y + h > frame.shape[0] or x + w > frame.shape[1]:
            continue
        cut_out = np.ascontiguousarray(frame[y:y + h, x:x + w])
        box = np.array(row["box_px"], float) - [x, y, x, y]
        cases.append((t["class"], source, cut_out, box, best is not None and best_iou >= iou_min))
    if not cases:
        return {"defects": 0}
    found = detector.detect([c[1] for c in cases] + [c[2] for c in cases])
    n = len(cases)
    per_class: dict[str, Counter] = defaultdict(Counter)
    for i, (cls, _, _, box, line_found) in enumerate(cases):
        counts = per_class[cls]
        counts["defects"] += 1
        counts["dataset"] += _bestiou(box, found[i].boxes) >= iou_min
        counts["cut_out"] += _bestiou(box, found[n + i].boxes) >= iou_min
        counts["line"] += line_found
    total = Counter()
    for c in per_class.values():
        total.update(c)

    def rates(c: Counter) -> dict[str, Any]:
        return {"defects": c["defects"], **{f"{k}_rate": round(c[k] / c["defects"], 3)
                                              for k in ("dataset", "cut_out", "line")}}

    return {**rates(total), "per_class": {k: rates(v) for k, v in sorted(per_class.items())}}


def _replay_check(traces: dict[tuple[str, str, int], FrameTrace], db: Path) -> dict[str, Any]:
    from inspection.records import line_reads
    from inspection.records.db import open_db

    con = open_db(db, readonly=True)
    try:
        recorded = line_reads.defects_per_frame(con)
    finally:
        con.close()
    same = sum(recorded.get(k, 0) == len(t.merged) for k, t in traces.items())
    return {"frames": len(traces), "frames_matching_records": round(same / len(traces), 4) if traces else None}


def print_tables(figures: dict[str, Any], out: Any) -> None:
    """The attribution as plain-text tables (the JSON holds the same numbers)."""
    print_cause_tables(figures, {"missed": (MISSED_CAUSES, "defects"), "false": (FALSE_CAUSES, "defects")}, out)
    false = figures["false"]
    if "fragments" in false:
        pieces = sum(false["fragments"].values())
        print(f"near_defect: {pieces} of {false['by_cause']['near_defect']} lie at least half inside labelled "
              f"boxes of their own class ({', '.join(f'{k} {v}' for k, v in false['fragments'].items()) or 'none'})",
              file=out)
        print("labelled boxes overlapping another of their class: "
              + ", ".join(f"{k} {v['overlapping']}/{v['boxes']}" for k, v in false["labels"].items()), file=out)
    control = figures["control"]
    if control.get("defects"):
        print(f"\ncontrol on {control['defects']} whole pasted defects: found in the dataset image / cut back out "
              "of the frame / by the line", file=out)
        for cls, row in [*control["per_class"].items(), ("all", control)]:
            print(f"  {cls:<16} {row['defects']:>4}  {row['dataset_rate']:.3f}  {row['cut_out_rate']:.3f}  "
                  f"{row['line_rate']:.3f}", file=out)
    print(f"\nreplay: {figures['replay']}", file=out)
