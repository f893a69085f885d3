"""What the unknown rule's signals carry for a registered model (`training.unknown_signals`), as JSON.

    .venv/bin/python scripts/unknown_signals.py --model hot [--models DIR] [--data DIR] [--max-images N] [--json OUT]

Runs the model's ONNX file on ONNX Runtime's CPU provider over its own val and test splits (each image
and one line view of it) and over the other line type's val and test splits (defect types it never
learned); prints, per split, the AUC of each signal (unseen over known), which limit of its rule fires,
and what other rules would call `unknown` at the same budget (limits set on val, applied to test).
Needs the `train` extra (the line views) and the datasets folder. About 30 s for hot, 90 s for cold on
one core here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inspection.detector import Detector
from inspection.registry import Registry
from training.unknown_signals import measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="registered version or line type (its active model)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="registry root")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"), help="datasets root")
    parser.add_argument("--max-images", type=int, default=None, help="at most N images per split (smoke)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    detector = Detector(Registry(args.models).resolve(args.model), providers="cpu")
    figures = measure(detector, args.data, max_images=args.max_images)
    text = json.dumps(figures, indent=1)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
