"""Trainable weights from a registered ONNX file (`train --init-from VERSION`).

Training keeps no PyTorch checkpoint in the registry: a version is its ONNX file, whose export folded
every batch norm into the convolution before it. To fine-tune a shipped model (more epochs,
distillation, plant data) its weights are read back: the graph's Conv nodes come in the order the
network runs its convolutions (the exporter traces one forward pass), so the k-th Conv node holds the
k-th convolution's weights. A convolution followed by a batch norm gets the folded weights and an
identity-like norm that adds the folded bias (mean 0, variance 1, scale sqrt(1 + eps)), which gives
the same function in eval mode. Those norms have no batch statistics of the model's own to learn
from, so a run started this way keeps every batch norm in eval mode (`freeze_batch_norms`): the
convolutions and the norms' scale and shift still train. The image-level head (an auxiliary loss of
training) is not in the file, because the exported graph does not use it: it starts anew.

`load_onnx_weights` refuses a file whose convolutions do not match the recipe's network one for one,
and checks the result: PyTorch and ONNX Runtime must give the same heatmaps on an image.
`load_classifier_weights` does the same for a crop classifier appended to a model's graph
(`training.relabel`, node names `relabel/...`), whose own outputs its caller checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inspection.errors import SteelInspectError
from training.model import Detector

PARITY_TOLERANCE = 1e-3  # max abs difference of heatmap probabilities, PyTorch vs ONNX Runtime


class InitError(SteelInspectError):
    """A registered model's weights cannot be read into the recipe's network."""


def _conv_order(model: nn.Module, forward: Callable[[], Any]) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """The model's convolutions in the order `forward` (one pass of the model) runs them, each with the
    batch norm that directly follows it (None for a plain convolution with bias)."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for m in model.modules()
             if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model.eval()
            forward()
    finally:
        for h in hooks:
            h.remove()
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d | None]] = []
    for i, mod in enumerate(order):
        if isinstance(mod, nn.Conv2d):
            after = order[i + 1] if i + 1 < len(order) else None
            pairs.append((mod, after if isinstance(after, nn.BatchNorm2d) else None))
    return pairs


def load_onnx_weights(model: Detector, path: Path) -> dict[str, float | int]:
    """Copy the convolution weights of the ONNX file at `path` into `model` (see the module doc);
    returns {"convolutions": n, "max_heat_diff": d} after checking PyTorch against ONNX Runtime."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    pairs = _conv_order(model, lambda: model.maps(torch.zeros(1, 1, 64, 64)))
    if len(nodes) != len(pairs):
        raise InitError(f"{path}: {len(nodes)} convolutions in the file, {len(pairs)} in the recipe's network "
                        "(another backbone or stride? pass the recipe's --backbone / --stride)")
    _copy_convolutions(path, nodes, pairs, weights)
    return {"convolutions": len(nodes), "max_heat_diff": _heat_parity(model, path)}


def load_classifier_weights(classifier: nn.Module, path: Path, prefix: str) -> int:
    """Copy the weights of the crop classifier appended to the ONNX file at `path` (its nodes and constants
    named `prefix`...) into `classifier` (`training.classifier.CropClassifier`); returns the number of
    convolutions. The caller checks the outputs against the file (`training.relabel.parity`)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv" and n.name.startswith(prefix)]
    crop = classifier.crop  # type: ignore[attr-defined]
    pairs = _conv_order(classifier, lambda: classifier(torch.zeros(1, 1, crop, crop)))
    if len(nodes) != len(pairs):
        raise InitError(f"{path}: {len(nodes)} convolutions in its crop classifier, {len(pairs)} in "
                        "EfficientNet-Lite0's")
    _copy_convolutions(path, nodes, pairs, weights)
    fc = classifier.fc  # type: ignore[attr-defined]
    for name, param in (("weight", fc.weight), ("bias", fc.bias)):
        stored = weights.get(f"{prefix}classifier.fc.{name}")
        if stored is None or tuple(stored.shape) != tuple(param.shape):
            raise InitError(f"{path}: no crop classifier output layer {name} of shape {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(torch.from_numpy(np.array(stored, np.float32)))
    return len(nodes)


def _copy_convolutions(path: Path, nodes: Sequence[Any], pairs: Sequence[tuple[nn.Conv2d, nn.BatchNorm2d | None]],
                       weights: dict[str, np.ndarray]) -> None:
    """Each Conv node's (folded) weights into its convolution, the folded bias into the norm after it."""
    with torch.no_grad():
        for k, (node, (conv, norm)) in enumerate(zip(nodes, pairs, strict=True)):
            if node.input[1] not in weights:
                raise InitError(f"{path}: convolution {k} ({node.name}) has no stored weight")
            w = torch.from_numpy(np.array(weights[node.input[1]], np.float32))
            b = (torch.from_numpy(np.array(weights[node.input[2]], np.float32)) if len(node.input) > 2
                 else torch.zeros(w.shape[0]))
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise InitError(f"{path}: convolution {k} ({node.name}) has weights {tuple(w.shape)}, the recipe's "
                                f"network {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            if norm is not None:
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0)
                norm.weight.fill_(float(np.sqrt(1.0 + norm.eps)))
                norm.bias.copy_(b)
            elif conv.bias is not None:
                conv.bias.copy_(b)
            else:
                raise InitError(f"{path}: convolution {k} ({node.name}) has a bias the recipe's network lacks")


def _heat_parity(model: Detector, path: Path) -> float:
    """Max abs difference of the heatmap probabilities, PyTorch vs ONNX Runtime, on a textured image."""
    from training.distill import maps_session

    rng = np.random.default_rng(0)
    image = (128 + 40 * rng.standard_normal((1, 1, 128, 160))).clip(0, 255).astype(np.uint8)
    session = maps_session(path)
    onnx_heat = session.run(None, {"image": image})[0]
    model.eval()
    with torch.no_grad():
        x = (torch.from_numpy(image).float() - model.mean) / model.std
        heat, _, _ = model(x)
    diff = float(np.abs(torch.sigmoid(heat).numpy() - 1 / (1 + np.exp(-onnx_heat))).max())
    if diff > PARITY_TOLERANCE:
        raise InitError(f"{path}: weights read back give heatmaps {diff:.2g} away from ONNX Runtime's "
                        f"(tolerance {PARITY_TOLERANCE}); the file's network is not the recipe's")
    return diff


def freeze_batch_norms(model: nn.Module) -> None:
    """Batch norms to eval mode (their running statistics stay); call after every `model.train()`."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
