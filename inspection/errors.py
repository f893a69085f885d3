"""Domain exceptions shared by the runtime, and the wording of the file problems they report.

Every error a user can cause by bad input derives from `SteelInspectError`; the CLI turns
those into one line and a non-zero exit instead of a traceback. Areas define their own
subclasses next to their code (for example `inspection.records.errors`).
"""

from pathlib import Path


class SteelInspectError(Exception):
    """Base of every error caused by bad input, bad files or a bad environment."""


class ConfigError(SteelInspectError, ValueError):
    """A line configuration file is missing, unreadable or has an invalid key."""


class FrameError(SteelInspectError, ValueError):
    """A frame or stream event is malformed: bad fields, shape, dtype or wire bytes."""


class RecordError(SteelInspectError, ValueError):
    """A worker -> recorder message (`inspection.results`) or a record is malformed; names the field."""


class TransportError(SteelInspectError):
    """A ZeroMQ endpoint could not be bound, connected or used."""


class SourceError(SteelInspectError):
    """A camera source could not be opened or delivered invalid data."""


class ManifestError(SteelInspectError):
    """A model manifest is missing, invalid, or does not match its model file."""


def os_error_message(exc: OSError) -> str:
    """An `OSError` as one line that starts with the file it is about: ``PATH: Permission denied``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    return f"{exc.filename}: {reason}"


def write_problem(path: Path, exc: OSError) -> str:
    """Why `path` (a file to create, or its folder) could not be written, in the user's terms: which
    folder on the way is a file or is not writable, else the system's reason."""
    path = Path(path)
    if isinstance(exc, PermissionError) and path.exists():
        return "the file is not writable" if path.is_file() else f"folder {path} is not writable"
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is not a folder"
    if isinstance(exc, PermissionError) and existing is not None:
        return f"folder {existing} is not writable"
    return exc.strerror or str(exc)
