"""`steel-inspect bench NAME --json OUT`: run a benchmark module from `inspection.benchmarks`."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from inspection import benchmarks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure speed or accuracy; prints JSON figures")
    names = parser.add_subparsers(dest="bench", metavar="NAME")
    names.required = True
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not benchmarks
            continue
        module = importlib.import_module(f"{benchmarks.__name__}.{info.name}")
        bench = names.add_parser(info.name, help=module.HELP, description=module.HELP)
        bench.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to this file")
        module.add_arguments(bench)
        bench.set_defaults(func=_runner(module))


def _runner(module):  # noqa: ANN001, ANN202 - closes over a benchmark module
    def run(args: argparse.Namespace) -> int:
        figures = module.run(args)
        text = json.dumps(figures, indent=2, sort_keys=True)
        print(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.json}", file=sys.stderr)
        return 0

    return run
