"""Console speed: the coil detail page for a coil with many defects (see `inspection.console.measure`)."""

from inspection.console.measure import HELP, add_arguments, run

__all__ = ["HELP", "add_arguments", "run"]
