"""Argument types for the command line: numbers and endpoints checked where they are parsed.

Every numeric option of `steel-inspect` uses one of these as its argparse ``type=``, so a zero, a
negative, a ``nan`` or a word is refused before any command runs, with one line that names the
option: ``steel-inspect recorder: error: argument --batch: expected an integer >= 1, got '0'``
(argparse adds the option's name to the `ArgumentTypeError` message). Endpoint options use
`endpoint`, the check a config's endpoint keys get.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # what argparse would name the type in its own messages
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None  # nan and inf pass every comparison test wrongly


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, milliseconds, rates)."""
    value = _finite(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a grace period, a density)."""
    value = _finite(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """A number from 0 to 1 (a score threshold, an IoU, a share)."""
    value = _finite(text)
    if value is None or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def class_threshold(text: str) -> tuple[str, float]:
    """CLASS=S: a class's operating threshold, S from 0 to 1 (class names may hold spaces)."""
    name, sep, value = text.rpartition("=")
    score = _finite(value) if sep else None
    if not name.strip() or score is None or not 0.0 < score < 1.0:
        raise argparse.ArgumentTypeError(f"expected CLASS=S with S between 0 and 1, got {text!r}")
    return name.strip(), score


def port(text: str) -> int:
    """A TCP port to listen on: 1..65535."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1..65535, got {text!r}")
    return value


def endpoint(text: str) -> str:
    """A ZeroMQ endpoint (``tcp://HOST:PORT``, ``ipc://PATH``, optionally ``bind:`` / ``connect:``)."""
    from inspection.config import check_endpoint
    from inspection.errors import TransportError

    try:
        return check_endpoint(text)
    except TransportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
