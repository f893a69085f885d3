"""The `steel-inspect` command: a thin layer over the library.

Each subcommand lives in its own module under `inspection.commands` and exposes
``register(subparsers)``; the parser it adds sets ``func`` to a handler ``(args) -> int``.
Modules are found by name, so an area adds a command without touching this file. Handlers
import their heavy dependencies lazily so ``--help`` stays fast and torch-free.

A `SteelInspectError` (bad input, bad file, bad config) becomes one line on stderr and
exit status 2, and so does a bad option (`Parser.error`; the numbers' types are in
`inspection.arguments`) and a file the system refuses (`OSError`: it names the file). Exit status 1
stays for a check that ran and failed (`audit verify` on an edited database, for instance); a
traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from inspection import __version__, commands
from inspection.errors import SteelInspectError, os_error_message


class Parser(argparse.ArgumentParser):
    """argparse with the project's error shape: one line naming the option, exit status 2.

    argparse prints the whole usage before its error, several lines that bury the one that
    matters; `--help` still shows the usage. Subcommand parsers are made of this class too
    (`add_subparsers` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
        message = " ".join(line.strip() for line in str(exc).splitlines())  # one line, whatever a library wrote
        print(f"steel-inspect {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refused (missing, not a folder, no permission, disk full)
        print(f"steel-inspect {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steel-inspect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
