"""Errors of the records area: every one is a `SteelInspectError`, printed by the CLI as one line."""

from inspection.errors import RecordError, SteelInspectError

__all__ = ["PlatformImportError", "RecordError", "ReportError", "RulesError", "StoreError"]


class StoreError(SteelInspectError):
    """A write or read of the line database was refused (unknown coil, defect, bad review...)."""


class RulesError(SteelInspectError, ValueError):
    """A grading or severity rule set is missing, unreadable or invalid."""


class PlatformImportError(SteelInspectError):
    """Plant (MES / ERP) data could not be read at all: bad file, bad URL, missing driver."""


class ReportError(SteelInspectError):
    """A coil report could not be produced (unknown coil, unwritable output...)."""
