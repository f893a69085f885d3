"""The coil report's pictures: the defect map (matplotlib) and defect crops with box and scale bar (OpenCV).

The map has the console's orientation and class colours (`inspection.defect_style`): length along
x, head at the left; width across y, drive side at the bottom; one panel per surface. matplotlib
comes with the `console` extra and is imported only when a map is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspection.defect_style import MAP_X, MAP_Y, SEVERITY_AREAS, class_colour, rgb
from inspection.records.crops import crop_origin

SURFACES = ("top", "bottom")
POINT_SCALE = 0.35  # screen px^2 -> matplotlib pt^2 at the report's size: markers as big on paper as on screen
SCALE_STEPS_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
CROP_SIDE_PX = 360  # crops are resampled to this longest side so the box and scale bar stay sharp in print
SCALE_BAND_PX = 36  # the white band under a crop that holds its scale bar


def map_extent(data: dict[str, Any]) -> tuple[float, float]:
    """(length in m, width in mm) the map spans: the coil's (inspected and the plant's), stretched to
    every defect; the console's `widgets.map_extent` rule."""
    defects = data["defects"]
    furthest = max((d["along_mm"] for d in defects), default=0.0) / 1000.0
    widest = max((d["across_mm"] for d in defects), default=0.0)
    length = max(float(data["coil"]["length_m"] or 0.0), float(data["platform"].get("length_m") or 0.0))
    return max(length, furthest, 1.0), max(float(data["coil"]["width_mm"] or 0.0), widest, 1.0)


def periodic_ids(alarms: Sequence[dict[str, Any]]) -> set[int]:
    """Ids of the defects that belong to a periodic alarm (drawn as diamonds, as in the console)."""
    ids: set[int] = set()
    for alarm in alarms:
        if alarm["kind"] == "periodic" and isinstance(alarm.get("details"), dict):
            ids.update(int(i) for i in alarm["details"].get("defect_ids", []))
    return ids


def map_figure(data: dict[str, Any], width_mm: float, height_mm: float) -> Any:
    """The defect map as a matplotlib `Figure` (top surface above bottom): colour = class, size =
    severity, faint = rejected false alarm, diamond = member of a periodic defect."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    length_m, width = map_extent(data)
    members = periodic_ids(data["alarms"])
    classes = sorted({d["effective_class"] for d in data["defects"]})
    # Figure, not pyplot: no global state, safe inside the console's threads.
    fig = Figure(figsize=(width_mm / 25.4, height_mm / 25.4), layout="constrained")
    axes = fig.subplots(len(SURFACES), 1, sharex=True)
    for ax, surface in zip(axes, SURFACES, strict=True):
        on_surface = [d for d in data["defects"] if d["surface"] == surface]
        groups: dict[tuple[bool, str, str], list[dict[str, Any]]] = {}
        for d in on_surface:
            key = (d["review_status"] != "rejected", "D" if d["id"] in members else "o", d["effective_class"])
            groups.setdefault(key, []).append(d)
        # One scatter per group (thousands of defects stay fast); rejected ones first, and within a
        # group by severity, so the markers that matter are drawn last, on top.
        for (counted, marker, cls), group in sorted(groups.items()):
            group.sort(key=lambda d: d["severity"])
            ax.scatter([d["along_mm"] / 1000.0 for d in group], [d["across_mm"] for d in group],
                       s=[SEVERITY_AREAS[d["severity"] - 1] * POINT_SCALE for d in group], marker=marker,
                       color=class_colour(cls), alpha=1.0 if counted else 0.25, edgecolors="none")
        for a in data["alarms"]:
            if a["kind"] == "periodic" and (a.get("surface") or surface) == surface and a.get("across_mm") is not None:
                ax.axhline(a["across_mm"], color="black", lw=0.7, ls=(0, (6, 4)), alpha=0.6)
                pitch = f"pitch {a['pitch_mm']:.0f} mm" if a.get("pitch_mm") else ""
                ax.text(0.005 * length_m, a["across_mm"], f" periodic {a.get('class') or ''} {pitch}", fontsize=6,
                        va="bottom")
        ax.set_xlim(0, length_m)
        ax.set_ylim(0, width)
        ax.set_title(f"{surface} surface ({len(on_surface)} defects)", fontsize=8, loc="left")
        ax.set_ylabel(MAP_Y.title, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
    axes[-1].set_xlabel(MAP_X.title, fontsize=7)
    handles = [Line2D([], [], ls="", marker="o", markersize=5, color=class_colour(c), label=c) for c in classes]
    handles += [Line2D([], [], ls="", marker="o", markersize=math.sqrt(a * POINT_SCALE), color="0.4", label=name)
                for a, name in zip(SEVERITY_AREAS, ("minor", "major", "critical"), strict=True)]
    handles += [Line2D([], [], ls="", marker="o", markersize=5, color="0.4", alpha=0.25, label="rejected"),
                Line2D([], [], ls="", marker="D", markersize=4, color="0.4", label="periodic")]
    fig.legend(handles=handles, loc="outside right center", fontsize=6, frameon=False)
    return fig


def map_png(data: dict[str, Any], path: Path, width_mm: float = 186.0, height_mm: float = 100.0,
            dpi: int = 200) -> None:
    """Save the defect map (see `map_figure`) as a PNG of `width_mm` x `height_mm` at `dpi`."""
    map_figure(data, width_mm, height_mm).savefig(path, dpi=dpi)


def crop_picture(png: bytes, defect: dict[str, Any], mm_per_px: tuple[float | None, float | None]
                 ) -> np.ndarray | None:
    """The crop (RGB) resampled to true proportions, the defect's box drawn in its class colour and a
    millimetre scale bar; None when the PNG cannot be decoded.

    `mm_per_px` is (across, along) of the camera; None where unknown (then the box's own ratio of
    millimetres to pixels is used, exact for a defect inside one frame).
    """
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(defect[k]) if defect.get(k) is not None else math.nan for k in ("x1", "y1", "x2", "y2"))
    mm_x, mm_y = _scales(defect, mm_per_px)
    box = _box_in_crop((x1, y1, x2, y2), w, h)
    # Resample so one millimetre is as long across as along, with CROP_SIDE_PX on the longest side.
    aspect = (mm_y / mm_x) if mm_x and mm_y else 1.0
    fx = CROP_SIDE_PX / max(w, h * aspect)
    fy = fx * aspect
    out = cv2.resize(image, (max(1, round(w * fx)), max(1, round(h * fy))),
                     interpolation=cv2.INTER_NEAREST if fx >= 1 else cv2.INTER_AREA)
    colour = tuple(reversed(rgb(class_colour(defect["effective_class"]))))  # OpenCV is BGR
    if box is not None:
        bx1, by1, bx2, by2 = box
        cv2.rectangle(out, (round(bx1 * fx), round(by1 * fy)), (round(bx2 * fx) - 1, round(by2 * fy) - 1),
                      (0, 0, 0), 4)
        cv2.rectangle(out, (round(bx1 * fx), round(by1 * fy)), (round(bx2 * fx) - 1, round(by2 * fy) - 1),
                      colour, 2)
    if mm_x:
        out = _with_scale_bar(out, mm_x / fx)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def _scales(defect: dict[str, Any], mm_per_px: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    across, along = mm_per_px
    single = len(defect.get("parts") or [defect["id"]]) == 1  # a merged defect's size spans several frames
    try:
        box_w, box_h = float(defect["x2"]) - float(defect["x1"]), float(defect["y2"]) - float(defect["y1"])
    except (TypeError, KeyError):
        box_w = box_h = 0.0
    if not across and single and box_w > 0 and defect.get("width_mm"):
        across = float(defect["width_mm"]) / box_w
    if not along and single and box_h > 0 and defect.get("length_mm"):
        along = float(defect["length_mm"]) / box_h
    return across, along


def _box_in_crop(box: tuple[float, float, float, float], w: int, h: int) -> tuple[float, ...] | None:
    """The box in crop pixels (the margin is not stored: `crops.crop_origin` reads it back from the
    crop's size); None when the crop does not hold this box: draw none rather than a wrong one."""
    origin = crop_origin(box, w, h)
    if origin is None:
        return None
    left, top = origin
    inside = (box[0] - left, box[1] - top, box[2] - left, box[3] - top)
    return None if inside[2] > w + 1 or inside[3] > h + 1 else inside


def _with_scale_bar(image: np.ndarray, mm_per_px: float) -> np.ndarray:
    """The image over a white band holding a black scale bar and its length: below the crop, so it
    never hides the defect, and as wide as its label needs however narrow the crop."""
    h, w = image.shape[:2]
    target_px = max(0.3 * w, 90.0)
    length_mm = max([s for s in SCALE_STEPS_MM if s / mm_per_px <= target_px] or [SCALE_STEPS_MM[0]])
    bar = max(2, round(length_mm / mm_per_px))
    label = f"{length_mm} mm"
    (text_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
    width = max(w, bar + text_w + 16)
    band = np.full((SCALE_BAND_PX, width, 3), 255, np.uint8)
    y, left = SCALE_BAND_PX // 2, (width - w) // 2  # a narrow crop sits centred over its band
    x0 = min(left + 2, width - bar - text_w - 14)
    cv2.rectangle(band, (x0, y - 4), (x0 + bar, y + 4), (0, 0, 0), -1)
    cv2.putText(band, label, (x0 + bar + 8, y + 9), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    top = np.full((h, width, 3), 255, np.uint8)
    top[:, left:left + w] = image
    return np.vstack([top, band])
