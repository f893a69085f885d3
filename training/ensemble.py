"""`steel-inspect ensemble`: several registered models as one registered version (see `inspection.ensemble`).

The members' ONNX graphs are put side by side in one file: one shared input, member i's nodes,
weights and outputs prefixed `m<i>_`. Nothing is retrained and no weight changes, so each member
inside the file gives the detections it gives alone (checked on val images before anything is
written to the registry). The new version is measured like a quantized copy (val, test, defect-free
background, the other line type's defects as unknown types; `training.quantize.derived_metrics`), its
bare ONNX Runtime speed beside the primary member's in one run, and registered. It goes live only
with `activate=True`, and then only through the usual gates (val mAP@0.5 against the active model,
the clean-strip check): each member is one more model run per image, which a GPU affords and a CPU
line may not.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspection.datasets import load_split, read_image
from inspection.detector import Detector
from inspection.ensemble import PREFIX, EnsembleError, check_members
from inspection.flips import FUSE_IOU
from inspection.registry import Manifest, Registry, load_manifest

log = logging.getLogger(__name__)

# fields of the primary's manifest that describe its own file or its own measurements, not the ensemble's
# (its unknown rule and the figures it was chosen by: each member's rule is kept under ensemble.members)
# the primary's fields that describe its own file, beside what no new version inherits (finalize.NOT_INHERITED)
OWN_FIELDS = ("speed_bare_ort", "speed_side_by_side", "parity", "openvino", "quantization", "classifier", "training",
              "unknown")
PARITY_IMAGES = 16
PARITY_TOLERANCE = 1e-4
FP16_MIN_ELEMENTS = 64  # biases and small constants stay fp32: they weigh nothing


def check_mergeable(manifests: Sequence[Manifest]) -> None:
    """Beyond `check_members`: one input the members read alike, and fp32 files (an int8 copy's
    OpenVINO quantization and its fp32 source for a GPU do not carry over into a merged file)."""
    check_members(manifests)
    primary = manifests[0]
    for m in manifests:
        if m.data.get("quantization") or m.data.get("classifier"):
            what = "an int8 copy" if m.data.get("quantization") else "a detector with a crop classifier appended"
            source = (m.data.get("quantization") or {}).get("source_version")
            hint = f"; name its fp32 source {source} instead" if source else ""
            raise EnsembleError(f"{m.version} is {what}: an ensemble is made of fp32 detectors{hint}")
        if (m.input_name, m.size_multiple) != (primary.input_name, primary.size_multiple):
            raise EnsembleError(f"{m.version} reads input {m.input_name!r} in multiples of {m.size_multiple} px, "
                                f"{primary.version} {primary.input_name!r} in multiples of {primary.size_multiple}")


def merge_onnx(paths: Sequence[Path], target: Path, fp16_weights: bool = True) -> None:
    """One ONNX file running every model in `paths` on the shared input; member i's names prefixed.
    `fp16_weights`: store the float weights as fp16, cast back to fp32 when the session loads (see
    `stored_as_fp16`)."""
    import onnx
    from onnx import compose, helper

    models = [onnx.load(str(p)) for p in paths]
    opsets = {tuple(sorted((o.domain, o.version) for o in m.opset_import)) for m in models}
    if len(opsets) != 1:
        raise EnsembleError(f"the members use different ONNX opsets ({sorted(opsets)}): export them alike")
    inputs = {tuple(i.name for i in m.graph.input) for m in models}
    if len(inputs) != 1 or len(next(iter(inputs))) != 1:
        raise EnsembleError(f"the members' inputs differ or are not one each: {sorted(inputs)}")
    parts = [compose.add_prefix(m, PREFIX.format(i), rename_inputs=False) for i, m in enumerate(models)]
    graph = helper.make_graph(
        [n for p in parts for n in p.graph.node], "steel_inspect_ensemble", list(parts[0].graph.input),
        [o for p in parts for o in p.graph.output], initializer=[t for p in parts for t in p.graph.initializer],
        value_info=[v for p in parts for v in p.graph.value_info])
    merged = helper.make_model(graph, opset_imports=models[0].opset_import, ir_version=models[0].ir_version,
                               producer_name="steel-inspect ensemble")
    if fp16_weights:
        merged = stored_as_fp16(merged)
    onnx.checker.check_model(merged)
    onnx.save(merged, str(target))


def stored_as_fp16(model: Any) -> Any:
    """`model` with each float32 weight of more than `FP16_MIN_ELEMENTS` values stored as fp16 and cast back
    to fp32 by a Cast node, which runtimes fold into a constant when the session loads: the file halves
    (three detectors in under 20 MB, what the repository takes per file) and every computation stays fp32;
    the weights lose precision to fp16's 11 significant bits (measured: README, "Ensembles")."""
    from onnx import TensorProto, helper, numpy_helper

    kept, casts = [], []
    for tensor in model.graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or np.prod(tensor.dims) <= FP16_MIN_ELEMENTS:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name + "__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT,
                                      name=tensor.name + "__to_fp32"))
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = [*casts, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def member_parity(members: Sequence[Manifest], merged: Path, images: Sequence[np.ndarray], work: Path,
                  fp16_weights: bool = True) -> dict[str, Any]:
    """Each member inside the merged file against its own file stored the same way (its weights as fp16
    too, with `fp16_weights`), on the same images, ONNX Runtime CPU: every output within
    `PARITY_TOLERANCE`, labels exact; raises EnsembleError otherwise. With fp16 storage, how far the
    members' scores moved from their fp32 files is reported beside (`fp16_storage_max_score_diff`: the
    largest difference between the two sorted top-K score lists, slot by slot)."""
    import onnx
    import onnxruntime as ort

    multiple = members[0].size_multiple
    feeds = [{members[0].input_name: np.pad(im, ((0, -im.shape[0] % multiple), (0, -im.shape[1] % multiple)),
                                            mode="edge")[None, None]} for im in images]
    inside = ort.InferenceSession(str(merged), providers=["CPUExecutionProvider"])
    worst, moved = 0.0, 0.0
    for i, member in enumerate(members):
        original = ort.InferenceSession(str(member.model_path), providers=["CPUExecutionProvider"])
        alone = original
        if fp16_weights:
            stored = work / f"member-{i}-fp16.onnx"
            onnx.save(stored_as_fp16(onnx.load(str(member.model_path))), str(stored))
            alone = ort.InferenceSession(str(stored), providers=["CPUExecutionProvider"])
        names = [o.name for o in alone.get_outputs()]
        for feed in feeds:
            ours = alone.run(names, feed)
            for name, a, b in zip(names, inside.run([PREFIX.format(i) + n for n in names], feed), ours, strict=True):
                diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
                if a.shape != b.shape or (a.dtype.kind in "iu" and diff) or diff > PARITY_TOLERANCE:
                    raise EnsembleError(f"member {member.version}'s output {name!r} differs inside the ensemble's "
                                        f"file (largest difference {diff:.3g}, shapes {a.shape} / {b.shape}): "
                                        "not registered")
                worst = max(worst, diff)
            if fp16_weights:
                scores = names.index("scores")
                moved = max(moved, float(np.abs(ours[scores] - original.run(names, feed)[scores]).max()))
    return {"images": len(images), "max_abs_diff": worst, "weights": "fp16" if fp16_weights else "fp32",
            **({"fp16_storage_max_score_diff": round(moved, 6)} if fp16_weights else {}),
            "rule": f"each member's outputs inside the file against its own file stored alike, ONNX Runtime CPU, "
                    f"within {PARITY_TOLERANCE} (labels exact)"}


def ensemble_version(names: Sequence[str], *, models_dir: Path | None = None, datasets_dir: Path,
                     splits_dir: Path | None = None, register: bool = True, activate: bool = False,
                     clean_strip: Any = None, fp16_weights: bool = True) -> dict[str, Any]:
    """Merge registered models `names` (the first is the primary: its thresholds and manifest fields),
    measure, register; a summary dict. `activate`: let the gates make it live (else registered only);
    `fp16_weights`: store the weights as fp16 (`stored_as_fp16`)."""
    from training.finalize import decide_activation, new_version_manifest, promotion_decision, register_gated
    from training.quantize import derived_metrics, headline, side_by_side_speed

    registry = Registry(models_dir)
    members = [registry.resolve(n) for n in names]
    check_mergeable(members)
    primary = members[0]
    dataset = (primary.data.get("data") or {}).get("dataset")
    if not dataset:
        raise EnsembleError(f"{primary.version}: the manifest names no dataset to measure the ensemble on")
    work = Path(tempfile.mkdtemp(prefix="steel-ensemble-"))
    try:
        onnx_path = work / "model.onnx"
        merge_onnx([m.model_path for m in members], onnx_path, fp16_weights)
        version = registry.next_version(primary.line_type)
        manifest = new_version_manifest(primary.data, version, onnx_path, OWN_FIELDS)
        manifest["architecture"] = (f"ensemble of {len(members)} detectors, detections fused per class "
                                    f"(weighted boxes fusion, IoU {FUSE_IOU}): "
                                    + "; ".join(f"{m.version}: {m.data.get('architecture', '?')}" for m in members))
        manifest["ensemble"] = {
            "members": [{"version": m.version, "sha256": m.sha256, "outputs_prefix": PREFIX.format(i),
                         "unknown": m.data.get("unknown"),
                         "val_map50": ((m.data.get("metrics") or {}).get("val") or {}).get("map50")}
                        for i, m in enumerate(members)],
            "fusion": "inspection.ensemble: weighted boxes fusion per class, score = sum / members; unknown when "
                      "at least half of the members that found a defect call it unknown by their own rules",
            "weights": "fp16, cast to fp32 when loaded" if fp16_weights else "fp32",
            "command": "steel-inspect ensemble " + " ".join(m.version for m in members)
                       + ("" if fp16_weights else " --weights fp32")}
        val = load_split(datasets_dir, dataset, "val", splits_dir)
        test = load_split(datasets_dir, dataset, "test", splits_dir)
        manifest["ensemble"]["parity"] = member_parity(
            members, onnx_path, [read_image(s.image_path) for s in val[:PARITY_IMAGES]], work, fp16_weights)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        candidate = Detector(load_manifest(work / "manifest.json"), providers="cpu")
        manifest["speed_side_by_side"] = side_by_side_speed({primary.version: primary.model_path,
                                                             "ensemble": onnx_path})
        metrics = derived_metrics(candidate, val, test, work, datasets_dir, splits_dir)
        manifest["metrics"] = metrics
        if activate:
            go, reason = promotion_decision(registry, primary.line_type, metrics["val"].get("map50"))
        else:
            go, reason = False, "not activated: registered only (steel-inspect ensemble without --activate)"
        go, reason = decide_activation(registry, primary.line_type, work, manifest, go, reason, clean_strip, register)
        summary = {"version": version, "members": [m.version for m in members], "registered": register,
                   "activated": go, "promotion": reason, "speed": manifest["speed_side_by_side"],
                   **headline(metrics),
                   "members_val_map50": {m.version: ((m.data.get("metrics") or {}).get("val") or {}).get("map50")
                                         for m in members},
                   "background_per_mpx": metrics.get("background", {}).get("detections_per_mpx")}
        if register:
            register_gated(registry, onnx_path, manifest, go, reason)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
