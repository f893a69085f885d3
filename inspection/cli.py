"""The `steel-inspect` command: a thin layer over the library.

Each subcommand lives in its own module under `inspection.commands` and exposes
``register(subparsers)``; the parser it adds sets ``func`` to a handler ``(args) -> int``.
Modules are found by name, so an area adds a command without touching this file. Handlers
import their heavy dependencies lazily so ``--help`` stays fast and torch-free.

A `SteelInspectError` (bad input, bad file, bad config) becomes one line on stderr and
exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from inspection import __version__, commands
from inspection.errors import SteelInspectError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steel-inspect",
        description="Surface inspection for hot- and cold-rolled steel strip.",
    )
    parser.add_argument("--version", action="version", version=f"steel-inspect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except SteelInspectError as exc:
        print(f"steel-inspect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steel-inspect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
