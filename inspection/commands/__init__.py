"""Subcommands of `steel-inspect`, one module each, discovered by `inspection.cli`.

A module defines ``register(subparsers) -> None``, adds its parser and sets
``func=handler`` with ``handler(args: argparse.Namespace) -> int``. Import heavy
modules inside the handler, not at module level.
"""
