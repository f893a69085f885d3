"""`steel-inspect models list | show VERSION | compare A B --data DIR | promote VERSION | rollback LINE_TYPE |
shadow VERSION|off | history`.

The registry lives in `--registry DIR` (default: $STEEL_INSPECT_MODELS or the checkout's
models/). `show` verifies the model file's sha256 against the manifest; `promote` refuses a
version that does not verify, one worse than the active model on the test split, and one that records
more on defect-free strip run through the line (the clean-strip check, a few minutes; `--force` skips it).
Every promote and rollback is appended to the history in
`registry.json` with the time, who, why and what was active before. `shadow` names a candidate that
running workers inspect a share of the frames with, beside the active model, recording only where the
two disagree (`[model] shadow` in a line config overrides it; `off` stops it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inspection.arguments import non_negative_int, positive_int
from inspection.frame import LINE_TYPES
from training.bootstrap import DEFAULT_RESAMPLES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, show, promote and roll back registered models",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, default=None, metavar="DIR", help="model registry folder")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="every version, with its test figures and the active marker")
    listing.add_argument("--line-type", choices=LINE_TYPES, default=None)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = actions.add_parser("show", help="print a version's manifest (sha256 verified)")
    show.add_argument("version", help="a version, hot/cold, or a path")
    promote = actions.add_parser("promote", help="make a version the active model of its line type")
    promote.add_argument("version")
    promote.add_argument("--by", default=None, help="who promotes (default: $USER)")
    promote.add_argument("--reason", default=None, help="why, for the history (required with --force)")
    promote.add_argument("--force", action="store_true",
                         help="promote although the gate finds the candidate worse than the active model")
    promote.add_argument("--config", type=Path, default=None,
                         help="line config whose [model] gate applies (default: the demo line)")
    rollback = actions.add_parser("rollback", help="re-activate the version active before the current one")
    rollback.add_argument("line_type", choices=LINE_TYPES)
    rollback.add_argument("--by", default=None)
    rollback.add_argument("--reason", default=None)
    shadow = actions.add_parser("shadow", help="run a candidate beside the active model on the live stream "
                                              "(workers pick it up between batches), or stop it")
    shadow.add_argument("version", help="a registered version, or off")
    shadow.add_argument("--line-type", choices=LINE_TYPES, default=None,
                        help="whose shadow to stop (with off; a version knows its own)")
    shadow.add_argument("--by", default=None, help="who (default: $USER)")
    shadow.add_argument("--reason", default=None)
    compare = actions.add_parser("compare", help="two models side by side on the same labelled images")
    compare.add_argument("a", metavar="A", help="the reference: hot/cold (the active model), a version or a path")
    compare.add_argument("b", metavar="B", help="the candidate")
    compare.add_argument("--data", type=Path, required=True, metavar="DIR",
                         help="folder with images/ + annotations/ (or a dataset root with --split)")
    compare.add_argument("--split", choices=("train", "val", "test"), default=None,
                         help="only this split of a dataset (figures on 'train' are not test figures)")
    compare.add_argument("--providers", choices=("auto", "cpu", "openvino"), default="auto")
    compare.add_argument("--threads", type=non_negative_int, default=1,
                         help="CPU threads per model (default 1: both models measured alike)")
    compare.add_argument("--rounds", type=positive_int, default=3, help="alternating timing rounds (default 3)")
    compare.add_argument("--bootstrap", type=non_negative_int, default=DEFAULT_RESAMPLES, metavar="N",
                         help="95 %% intervals of B - A over N resamples of the images, the same images for both "
                              "models (default %(default)s; 0: none)")
    compare.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures here")
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")
    history = actions.add_parser("history", help="what was active when")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.add_argument("--at", type=_aware_time, default=None, metavar="ISO",
                         help="only say which version of each line type was active at this time (naive = UTC)")
    parser.set_defaults(func=run)


def _test_figure(data: dict[str, Any], key: str) -> str:
    value = ((data.get("metrics") or {}).get("test") or {}).get(key)
    return "-" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    from inspection.registry import Registry

    registry = Registry(args.registry)
    if args.action == "compare":
        return run_compare(args, registry)
    if args.action == "list":
        versions = registry.versions(args.line_type)
        active = {lt: registry.active(lt) for lt in LINE_TYPES}
        shadows = {lt: registry.shadow(lt) for lt in LINE_TYPES}
        rows = [{"version": m.version, "line_type": m.line_type, "active": active[m.line_type] == m.version,
                 "shadow": shadows[m.line_type] == m.version,
                 "created": m.data.get("created"), "size_bytes": m.data.get("size_bytes"),
                 "classes": len(m.classes), "map50_test": _test_figure(m.data, "map50"),
                 "detection_rate_test": _test_figure(m.data, "detection_rate")} for m in versions]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no models registered in {registry.root}")
        else:
            print(f"{'':2}{'version':<24}{'line':<6}{'created':<27}{'MB':>7}  {'mAP50':>6}  {'det.rate':>8}")
            for r in rows:
                size = f"{(r['size_bytes'] or 0) / 1e6:.2f}"
                mark = "*" if r["active"] else "s" if r["shadow"] else " "
                print(f"{mark:2}{r['version']:<24}{r['line_type']:<6}{r['created'] or '-':<27}"
                      f"{size:>7}  {r['map50_test']:>6}  {r['detection_rate_test']:>8}")
            print("* = active, s = shadow (runs beside the active model)")
    elif args.action == "show":
        manifest = registry.resolve(args.version)
        print(json.dumps(manifest.data, indent=2))
        active = registry.active(manifest.line_type) == manifest.version
        print(f"sha256 verified: {manifest.model_path}; {'active' if active else 'not active'} "
              f"for {manifest.line_type}")
    elif args.action == "promote":
        manifest = registry.resolve(args.version)
        previous = registry.active(manifest.line_type)
        findings, clean_strip = _gate(args, registry, manifest, previous)
        registry.promote(manifest.version, by=args.by, reason=args.reason, gate=findings, clean_strip=clean_strip)
        forced = f"; forced past the gate: {'; '.join(findings)}" if findings else ""
        print(f"{manifest.line_type}: active model is now {manifest.version} (was {previous}){forced}")
    elif args.action == "shadow":
        _shadow(args, registry)
    elif args.action == "rollback":
        previous = registry.active(args.line_type)
        manifest = registry.rollback(args.line_type, by=args.by, reason=args.reason)
        print(f"{args.line_type}: rolled back from {previous} to {manifest.version}")
    elif args.action == "history" and args.at is not None:
        active = {lt: registry.active_at(lt, args.at) for lt in LINE_TYPES}
        if args.json:
            print(json.dumps({"at": args.at.isoformat(), "active": active}, indent=2))
        for lt, version in [] if args.json else active.items():
            print(f"{args.at.isoformat()}  {lt:<5} {version or '(none active)'}")
    elif args.action == "history":
        entries = registry.history()
        if args.json:
            print(json.dumps(entries, indent=2))
        elif not entries:
            print("no promotions yet")
        for e in [] if args.json else entries:
            reason = f": {e['reason']}" if e.get("reason") else ""
            print(f"{e.get('time')}  {e.get('line_type'):<5} {e.get('action'):<9} {e.get('version')} "
                  f"(was {e.get('previous')}) by {e.get('by')}{reason}")
    return 0


def _shadow(args: argparse.Namespace, registry: Any) -> None:
    from inspection.errors import SteelInspectError

    if args.version == "off":
        if args.line_type is None:
            raise SteelInspectError("models shadow off needs --line-type hot|cold")
        previous = registry.shadow(args.line_type)
        registry.set_shadow(None, line_type=args.line_type, by=args.by, reason=args.reason)
        print(f"{args.line_type}: shadow off (was {previous or 'none'})")
        return
    manifest = registry.set_shadow(args.version, line_type=args.line_type, by=args.by, reason=args.reason)
    print(f"{manifest.line_type}: {manifest.version} runs in shadow beside the active "
          f"{registry.active(manifest.line_type)} (running workers pick it up between batches and inspect "
          f"[model] shadow_share of the frames with it)")


def _aware_time(text: str) -> Any:
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time such as 2026-12-01T06:00, got {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _gate(args: argparse.Namespace, registry: Any, candidate: Any,
          previous: str | None) -> tuple[list[str], dict[str, Any] | None]:
    """What the promotion gate finds against `candidate`, and the clean-strip check's figures (None when it
    did not run); raises unless forced with a reason.

    The test-split figures come from the manifests; the clean-strip check runs both models through the
    line (`inspection.clean_strip`, minutes). Forced, the check does not run: --force is the way back to
    a known model when the line needs one now, and the history says it was not run."""
    from inspection.clean_strip import Gate
    from inspection.config import load_config
    from inspection.errors import SteelInspectError
    from inspection.promotion_gate import gate_findings

    if args.force and not (args.reason or "").strip():
        raise SteelInspectError("--force needs --reason: why the gate is overridden goes into the history")
    if previous is None or previous == candidate.version:
        return [], None
    model = load_config(args.config).model
    findings = gate_findings(registry.resolve(previous), candidate, max_recall_drop=model.promote_max_recall_drop,
                             max_detection_rate_drop=model.promote_max_detection_rate_drop)
    if findings and not args.force:
        raise SteelInspectError(f"{candidate.version} is worse than the active {previous} on the test split: "
                                f"{'; '.join(findings)} (promote with --force --reason TEXT to override)")
    gate = Gate.from_config(args.config, model)
    if args.force or gate.frames == 0:
        return findings, {"run": False, "why": "--force" if args.force else "promote_clean_strip_frames = 0"}
    print(f"clean-strip check: {previous} and {candidate.version} on at most {gate.frames} frames per camera of "
          f"defect-free strip ({gate.strip}) through the line (a few minutes) ...", flush=True)
    figures = gate.compare(previous, candidate.version, line_type=candidate.line_type, registry=registry.root)
    print(gate.summary(figures), flush=True)
    if figures["findings"]:
        raise SteelInspectError(f"{candidate.version} is worse than the active {previous} on clean strip: "
                                f"{'; '.join(figures['findings'])} (promote with --force --reason TEXT to override)")
    return findings, {"run": True, **figures}


def _voc_classes(data: Path) -> set[str]:
    """The box class names of a VOC folder (empty for YOLO, whose ids index the model's own classes)."""
    from inspection.datasets import DatasetError, load_samples

    try:
        return {label for sample in load_samples(data) for label in sample.labels}
    except DatasetError:  # YOLO without class names, or a bad folder: the evaluation's loader says what is wrong
        return set()


def run_compare(args: argparse.Namespace, registry: Any) -> int:
    from inspection.commands.evaluate import load_evaluation_samples
    from inspection.commands.predict import write_json
    from inspection.detector import Detector
    from inspection.errors import SteelInspectError
    from training.compare import compare, table, worst_recall_drop

    manifests = [registry.resolve(args.a), registry.resolve(args.b)]
    if manifests[0].line_type != manifests[1].line_type:
        raise SteelInspectError(f"{manifests[0].version} is a {manifests[0].line_type} model and "
                                f"{manifests[1].version} a {manifests[1].line_type} model: compare models of one "
                                "line type")
    detectors = [Detector(m, providers=args.providers, intra_op_threads=args.threads) for m in manifests]
    # A class new at the plant (in a model trained with --plant-data) is one the other model never learned:
    # its boxes are judged for that model as an unseen defect type (found or not, called what).
    present = _voc_classes(args.data) if args.split is None else set()
    unseen = [tuple(sorted(present - set(m.classes))) for m in manifests]
    samples = [load_evaluation_samples(args.data, args.split, m.classes, m.line_type, u)
               for m, u in zip(manifests, unseen, strict=True)]
    figures = compare(*detectors, *samples, rounds=args.rounds, progress=not args.no_progress, unseen=unseen,
                      bootstrap=args.bootstrap)
    names = (manifests[0].version, manifests[1].version)
    if names[0] == names[1]:
        names = (f"A: {names[0]}", f"B: {names[1]}")
    for line in table(figures, names):
        print(line)
    cls, drop = worst_recall_drop(figures)
    print(f"largest recall drop from A to B: {cls} {-drop:+.3f}" if cls else "no class loses recall from A to B")
    if args.json:
        write_json(args.json, {"a": names[0], "b": names[1], "data": str(args.data), "split": args.split,
                               "figures": figures})
    return 0
