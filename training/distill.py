"""Distillation from registered models (`train --teacher VERSION [VERSION ...]`).

The teacher is one or more registered detectors of the student's line type and classes (an
ensemble version stands for its members). Each training crop goes through every teacher in ONNX
Runtime, with the graph opened up to give its raw class heatmap (the input of the Sigmoid before the
peak search); the teacher's heatmap is the mean of the members' probabilities. That averaged map
scored val mAP@0.5 0.814 for hot-20261205-4's three members, against 0.752-0.802 alone; what a
student distilled from it gained and lost is in the README (Models, "Fine-tuning a registered model
and distilling an ensemble into it").

The student learns it beside the labels: `distill_loss` is a binary cross-entropy towards the
teacher's probability at every cell, weighted by the squared gap between the student's and the
teacher's probability (the quality focal loss's weighting: cells where both agree, most of the
background, add little), normalised like the focal loss by the labelled objects of the batch. The
teacher also scores the defect-free tiles and line views, where labels say only "nothing here".

`flips` ("h", "v", "hv"): each teacher also sees every crop mirrored, and its heatmap of the mirror,
mirrored back, joins the mean (test-time flips as the teacher: the detector with flips is measured
above the same detector without them, Models, "Test-time flips"). A mirror of a crop whose sides are
multiples of the output stride maps every heatmap cell onto one cell, so the maps line up cell for cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from inspection.errors import SteelInspectError
from inspection.providers import session_options


class TeacherError(SteelInspectError):
    """A teacher model cannot teach this student (other classes, other grid, unreadable graph)."""


def maps_session(path: Path, threads: int = 1) -> Any:
    """An ONNX Runtime session on the detector at `path` whose outputs are its heatmap logits
    [N, C, h, w] and box distances [N, 4, h, w] (the maps the graph's peak search reads)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    sigmoids = [n for n in graph.node if n.op_type == "Sigmoid"]
    softplus = [n for n in graph.node if n.op_type == "Softplus"]
    if len(sigmoids) != 1 or len(softplus) != 1:
        raise TeacherError(f"{path}: expected one heatmap Sigmoid and one box Softplus in the graph, found "
                           f"{len(sigmoids)} and {len(softplus)} (an ensemble file? name its members)")
    scaled = [n for n in graph.node if n.op_type == "Mul" and softplus[0].output[0] in n.input]
    dist = scaled[0].output[0] if scaled else softplus[0].output[0]
    del graph.output[:]
    graph.output.extend([onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                         for name in (sigmoids[0].input[0], dist)])
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


FLIP_AXES = {"h": (3,), "v": (2,), "hv": (2, 3)}  # of an [N, C, H, W] array


class Teacher:
    """Registered detectors whose mean heatmap probability the student learns (with `flips`, over the
    mirrored crops too)."""

    def __init__(self, manifests: Sequence[Any], classes: Sequence[str], threads: int = 1,
                 flips: Sequence[str] = ()) -> None:
        if not manifests:
            raise TeacherError("a teacher needs at least one registered model")
        unknown = [f for f in flips if f not in FLIP_AXES]
        if unknown or len(set(flips)) != len(flips):
            raise TeacherError(f"teacher flips: expected distinct values of {sorted(FLIP_AXES)}, got {list(flips)}")
        for m in manifests:
            if tuple(m.classes) != tuple(classes):
                raise TeacherError(f"teacher {m.version} has classes {list(m.classes)}; the student learns "
                                   f"{list(classes)}")
        self.flips = tuple(flips)
        self.versions = [m.version for m in manifests]
        self.sha256 = [m.sha256 for m in manifests]
        self._sessions = [maps_session(m.model_path, threads) for m in manifests]

    def describe(self) -> dict[str, Any]:
        return {"versions": self.versions, "sha256": self.sha256, "flips": list(self.flips)}

    def heat(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """uint8-valued images [N, 1, H, W] -> mean heatmap probability [N, C, h, w] of the teachers
        (and of their mirrored views, mirrored back); `grid` (h, w) is the student's, which every
        teacher must match (same output stride)."""
        batch = images.clamp(0, 255).round().to(torch.uint8).numpy()
        views = [()] + [FLIP_AXES[f] for f in self.flips]
        total = None
        for version, session in zip(self.versions, self._sessions, strict=True):
            for axes in views:
                view = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
                logits = session.run(None, {"image": view})[0]
                if tuple(logits.shape[2:]) != tuple(grid):
                    raise TeacherError(f"teacher {version} gives a {logits.shape[2]} x {logits.shape[3]} heatmap "
                                       f"where the student's is {grid[0]} x {grid[1]}: teach at the same output "
                                       "stride")
                prob = 1.0 / (1.0 + np.exp(-(np.flip(logits, axes) if axes else logits)))
                total = prob if total is None else total + prob
        return torch.from_numpy(np.ascontiguousarray(total / (len(self._sessions) * len(views))))


def teacher_manifests(registry: Any, names: Sequence[str]) -> list[Any]:
    """The registered models `names` stand for, an ensemble version replaced by its members."""
    from inspection.ensemble import member_versions

    out = []
    for name in names:
        manifest = registry.resolve(name)
        members = member_versions(manifest)
        if members:
            out.extend(registry.resolve(v) for v in members)
        else:
            out.append(manifest)
    return out


def distill_loss(student_logits: torch.Tensor, teacher_prob: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """Quality-focal binary cross-entropy of the student's heatmap towards the teacher's probability,
    summed over cells and divided by the batch's labelled objects (at least 1)."""
    prob = torch.sigmoid(student_logits)
    bce = F.binary_cross_entropy_with_logits(student_logits, teacher_prob, reduction="none")
    return (bce * (prob - teacher_prob).abs().pow(2)).sum() / objects.clamp(min=1.0)
