"""What the commands that make a model from a registered one (`quantize`, `classifier`) share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inspection.config import default_datasets_dir
from inspection.errors import SteelInspectError


def datasets_folder(given: Path | None, error: type[SteelInspectError]) -> Path:
    """The datasets root given, or the default; `error` names it when it is not a folder."""
    datasets = given or default_datasets_dir()
    if not datasets.is_dir():
        raise error(f"{datasets}: datasets folder not found (set --datasets or STEEL_INSPECT_DATASETS)")
    return datasets


def print_summary(summary: dict[str, Any], json_path: Path | None) -> None:
    """The summary as JSON on stdout, and in `json_path` too when given."""
    text = json.dumps(summary, indent=1)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n", encoding="utf-8")
    print(text)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """--no-register, --datasets, --models, --json and --config, as every such command has them."""
    add_gate_option(parser)
    parser.add_argument("--no-register", action="store_true", help="measure, but do not register")
    parser.add_argument("--datasets", type=Path, default=None, help="datasets root (default ../shared/datasets)")
    parser.add_argument("--models", type=Path, default=None, help="registry root (default models/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")


def add_gate_option(parser: argparse.ArgumentParser) -> None:
    """--config: the line whose clean-strip check decides, after the val gate, whether a new model goes live."""
    parser.add_argument("--config", type=Path, default=None,
                        help="line config whose [model] clean-strip check (promote_clean_strip_frames) decides, "
                             "after the val gate, whether the new model goes live (default: the demo line)")


def clean_strip_gate(args: argparse.Namespace) -> Any:
    """The `inspection.clean_strip.Gate` of --config; None when the model will not be registered."""
    from inspection.clean_strip import Gate

    return None if args.no_register else Gate.from_config(args.config)
