"""Test-time flips: the model also looks at mirrored copies of each image, and what the views found is fused.

Why: a single pass misses defects it would find mirrored and raises false ones a mirrored copy
does not; fusing views trades compute for accuracy, which a GPU line can afford. Measured on the
val splits (`evaluate --split val --flip ...`, the active models' OpenVINO copies): mAP@0.5 hot
0.760 alone, 0.774 with the left-right mirror (2 runs), 0.792 with both mirrors (3 runs), 0.790
with all four; cold 0.760, 0.782, 0.790, 0.789. README, "Test-time flips", has the test and line
figures and the cost. Strip has a rolling direction, but the defect types look alike under both
mirrors (training flips both ways, `training.augment`), so a mirrored view is a fair second opinion.

Fusion is weighted boxes fusion (Solovyev et al., 2019) per class: in score order, a detection
starts a group or joins the group of a higher-scoring detection of its class that it overlaps at
IoU > `FUSE_IOU`, one member per view; the group's box is the score-weighted mean of its members',
its score the sum of their scores over the number of views. A defect some views miss keeps only
their share of its score: that is what turns a detection only one view believes into a low score.
Taking the best box of the views instead (plain NMS over their union; a prototype on the hot val
split, the ONNX Runtime file, 3 views) found more but raised the false detections by two thirds
(2.6 per image against 1.6 alone) and lost mAP against this fusion (0.761 against 0.782), because a
single view's false detection survives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inspection.errors import SteelInspectError
from inspection.tiling import iou_matrix

FLIPS = ("h", "v", "hv")  # horizontal mirror, vertical mirror, both (a 180-degree turn)
FUSE_IOU = 0.55
FUSED_EXTRAS = ("class_scores", "novelty", "unknown")  # averaged over a group's members when every view has them
# A group is unknown when at least this share of its members were. Half, not "any": on val the hot
# ensemble (inspection.ensemble) then calls 2.4 % of its known defects unknown and 0.49 of the cold set's
# types; "any member" calls 0.66 of those but 6.4 % of the known ones, past the 5 % budget the models'
# own rules keep (training.unknown.BUDGET).
UNKNOWN_VOTE = 0.5


class FlipError(SteelInspectError, ValueError):
    """A test-time flip setting is not one of `FLIPS`, or repeats one."""


def check_flips(flips: Sequence[str]) -> tuple[str, ...]:
    """The flips as a tuple, in their given order; a bad or repeated name is refused by name."""
    if isinstance(flips, str):
        raise FlipError(f"test-time flips: expected a list of {', '.join(FLIPS)}, got the string {flips!r}")
    out = tuple(flips)
    bad = [f for f in out if f not in FLIPS]
    if bad:
        raise FlipError(f"test-time flips: {bad[0]!r} is not one of {', '.join(FLIPS)}")
    if len(set(out)) != len(out):
        raise FlipError(f"test-time flips: {list(out)} names a flip twice")
    return out


def flipped(image: np.ndarray, flip: str) -> np.ndarray:
    """`image` mirrored left-right ("h"), top-bottom ("v"), both ("hv") or not at all ("")."""
    if "h" in flip:
        image = image[:, ::-1]
    if "v" in flip:
        image = image[::-1]
    return np.ascontiguousarray(image)


def unflipped_boxes(boxes: np.ndarray, flip: str, height: int, width: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) found in the `flip` view of a height x width image, in the image's pixels."""
    out = boxes.astype(np.float32, copy=True)
    if "h" in flip:
        out[:, [0, 2]] = width - boxes[:, [2, 0]]
    if "v" in flip:
        out[:, [1, 3]] = height - boxes[:, [3, 1]]
    return out


def _groups(boxes: np.ndarray, labels: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Group index of each detection (sorted by score, highest first): a detection that no earlier
    group took starts one (it leads it) and takes each later detection of its class that overlaps it
    at IoU > `FUSE_IOU`, not yet taken, from a view the group has no member of yet."""
    n = len(labels)
    group = np.full(n, -1, np.int64)
    if not n:
        return group
    partners = np.triu((iou_matrix(boxes, boxes) > FUSE_IOU) & (labels[:, None] == labels[None, :]), 1)
    later: list[list[int]] = [[] for _ in range(n)]  # plain lists: numpy per row costs more than the work
    for i, j in zip(*(side.tolist() for side in np.nonzero(partners)), strict=True):
        later[i].append(j)
    view_of = views.tolist()
    count = 0
    for i in range(n):
        if group[i] >= 0:
            continue
        group[i], seen = count, {view_of[i]}
        for j in later[i]:
            if group[j] < 0 and view_of[j] not in seen:
                group[j] = count
                seen.add(view_of[j])
        count += 1
    return group


def fuse(found: Sequence[Any], flips: Sequence[str], height: int, width: int) -> dict[str, np.ndarray | None]:
    """One set of detections from the views of one image: `found[i]` holds the `Detections` of the view
    `flips[i]` ("" for the image itself), every detection with a score > 0, boxes in view pixels.
    Returns the fields of one `Detections` (class_scores and novelty: the mean of each group's members,
    unknown: whether at least half of them were unknown; each only when every view has it), sorted by
    score."""
    if len(found) != len(flips):
        raise FlipError(f"fuse: {len(found)} views' detections for {len(flips)} flips")
    boxes = np.concatenate([unflipped_boxes(d.boxes, f, height, width) for d, f in zip(found, flips, strict=True)])
    scores = np.concatenate([d.scores for d in found]).astype(np.float32)
    labels = np.concatenate([d.labels for d in found]).astype(np.int64)
    views = np.concatenate([np.full(len(d.scores), i) for i, d in enumerate(found)])
    extras = {name: np.concatenate([getattr(d, name) for d in found])
              for name in FUSED_EXTRAS if all(getattr(d, name) is not None for d in found)}
    order = np.argsort(-scores, kind="stable")
    boxes, scores, labels, views = boxes[order], scores[order], labels[order], views[order]
    extras = {name: values[order] for name, values in extras.items()}
    group = _groups(boxes, labels, views)
    count = int(group.max()) + 1 if len(group) else 0
    weight = np.bincount(group, weights=scores, minlength=count)
    members = np.bincount(group, minlength=count)
    weighted = np.zeros((count, 4))
    np.add.at(weighted, group, boxes * scores[:, None])
    leader = np.full(count, len(group))
    np.minimum.at(leader, group, np.arange(len(group)))  # the group's first (highest-scoring) member
    out: dict[str, np.ndarray | None] = {
        "boxes": (weighted / np.maximum(weight, 1e-12)[:, None]).astype(np.float32),
        "scores": (weight / len(flips)).astype(np.float32),
        "labels": labels[leader].astype(np.int64) if count else np.zeros(0, np.int64),
    }
    for name in FUSED_EXTRAS:
        if name not in extras:
            out[name] = None
            continue
        values = extras[name]
        sums = np.zeros((count, *values.shape[1:]))
        np.add.at(sums, group, values)
        mean = sums / members.reshape(-1, *([1] * (values.ndim - 1)))
        # each view's rule judged its own detections; the group takes the vote
        out[name] = mean >= UNKNOWN_VOTE if name == "unknown" else mean.astype(np.float32)
    rank = np.argsort(-out["scores"], kind="stable")  # type: ignore[arg-type]
    return {name: (values[rank] if values is not None else None) for name, values in out.items()}
