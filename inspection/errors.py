"""Domain exceptions shared by the runtime.

Every error a user can cause by bad input derives from `SteelInspectError`; the CLI turns
those into one line and a non-zero exit instead of a traceback. Areas define their own
subclasses next to their code (for example `inspection.records.errors`).
"""


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
