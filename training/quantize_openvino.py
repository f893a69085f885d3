"""An int8 copy's own OpenVINO quantization: NNCF post-training quantization of the fp32 source on
OpenVINO's graph, saved as an IR (``openvino/model.xml`` + ``.bin``) beside the copy's model.onnx.

Why a second file: OpenVINO reads the ONNX Runtime copy (QDQ) but computes it its own way, and on
this project's AVX2 machine that cost val mAP@0.5 0.06-0.08 (hot-20261204-3: 0.774 on ONNX Runtime,
0.709 on OpenVINO; `inspection.backends.INT8_ON_OPENVINO`). Quantized again by NNCF with the ONNX
backend (so still a QDQ file), OpenVINO gave the same loss (0.695) while ONNX Runtime kept 0.769 on
that file; quantized by NNCF on OpenVINO's own graph (`openvino.convert_model`, then the same
calibration images), OpenVINO kept 0.771, and ran 1.2-1.6x faster than ONNX Runtime's int8 on the
same tiles (scratch measurements of 2026-12-04, re-measured by `bench inference` after registration:
README, "CPU runtimes"). The recipe: NNCF's performance preset (symmetric int8 weights and activations
where NNCF places quantizers) on `training.quantize.calibration_set`, with NNCF's full bias correction
instead of its default fast one. Why (2026-12-05, hot-20261205-2, trained with outlier shapes): with
fast bias correction its OpenVINO copy recorded 38 defects on 1,220 m of clean strip where the fp32
model recorded 13 and the ONNX Runtime int8 copy 14 (`steel-inspect bench clean_strip`, the demo line,
seed 21: patches and rolled-in scale on plain texture); without it, 12, and val mAP@0.5 0.760 against
0.753 (fp32 0.752). Keeping the stem and heads in fp32 (34) or the mixed preset (177) did not help;
more calibration backgrounds did in part (16 frames: 22, 32: 15).

The copy's figures are its own: `agreement_val` with the fp32 source, and val and test metrics
measured through the runtime's `Detector` on OpenVINO. Its thresholds and unknown rule are the
version's (chosen on the ONNX Runtime copy's outputs).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspection.backends import openvino_installed
from inspection.errors import SteelInspectError
from inspection.manifest import OPENVINO_DIR, file_sha256

log = logging.getLogger(__name__)

XML, BIN = f"{OPENVINO_DIR}/model.xml", f"{OPENVINO_DIR}/model.bin"


class OpenVinoQuantizeError(SteelInspectError):
    """NNCF or OpenVINO cannot quantize a model."""


def missing_packages() -> list[str]:
    """What of nncf and openvino is not installed (both come with the `train` extra)."""
    return [name for name, there in (("openvino", openvino_installed()), ("nncf", importlib.util.find_spec("nncf")))
            if not there]


def quantize_for_openvino(source: Path, folder: Path, calibration: Sequence[np.ndarray]) -> dict[str, Any]:
    """Write the OpenVINO int8 copy of fp32 `source` (model.onnx) under `folder` (`XML`, `BIN`); the
    manifest's ``openvino`` entry (files, sha256, tool), figures to be added by the caller."""
    missing = missing_packages()
    if missing:
        raise OpenVinoQuantizeError(f"an OpenVINO copy needs {' and '.join(missing)}: pip install -e '.[train]'")
    import nncf
    import openvino as ov

    started = time.perf_counter()
    try:
        model = ov.convert_model(str(source))
        dataset = nncf.Dataset(list(calibration), lambda image: {"image": image[None, None]})
        # NNCF draws its progress bars on stdout, where `quantize --json -` prints the summary
        with contextlib.redirect_stdout(sys.stderr):
            quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset.PERFORMANCE,
                                      subset_size=len(calibration), fast_bias_correction=False)
        (folder / OPENVINO_DIR).mkdir(parents=True, exist_ok=True)
        ov.save_model(quantized, str(folder / XML), compress_to_fp16=False)
    except Exception as exc:  # noqa: BLE001 - NNCF and OpenVINO raise many kinds; name the model
        raise OpenVinoQuantizeError(f"{source}: OpenVINO quantization failed: {exc}"[:500]) from None
    took = time.perf_counter() - started
    log.info("OpenVINO copy of %s quantized in %.1f s", source, took)
    return {"model_file": XML, "weights_file": BIN, "sha256": file_sha256(folder / XML),
            "weights_sha256": file_sha256(folder / BIN), "format": "OpenVINO IR",
            "tool": f"nncf {importlib.metadata.version('nncf')}, openvino {importlib.metadata.version('openvino')}",
            "recipe": "nncf.quantize on openvino.convert_model(source): performance preset (symmetric int8 weights "
                      "and activations where NNCF places quantizers), full bias correction "
                      "(fast_bias_correction=False)",
            "calibration_images": len(calibration)}
