"""Benchmarks run by `steel-inspect bench NAME --json OUT`, one module each.

A module defines ``HELP: str``, ``add_arguments(parser) -> None`` and
``run(args) -> dict``; the returned dict (JSON-able) is printed and written to --json.
Figures are measured, never asserted in tests.
"""
