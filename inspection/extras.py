"""Optional dependencies: one clear error naming the extra to install when a package is missing.

The line's processes need only the base dependencies of pyproject.toml. The review console and
the PDF coil report need the `console` extra (streamlit, matplotlib, fpdf2); evaluation plots
and training need the `train` extra. Code that needs an extra calls `require_extra` before it
imports the package, so a missing package is one line on stderr and exit status 2 (the CLI's
rule for every `SteelInspectError`), not a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib.util

from inspection.errors import SteelInspectError


class MissingExtraError(SteelInspectError, ImportError):
    """An optional package is not installed; the message names the extra that provides it.

    Also an `ImportError`, so code that already treats an absent optional package as such keeps
    doing so.
    """


def require_extra(extra: str, needed_for: str, *modules: str) -> None:
    """Raise `MissingExtraError` unless every top-level module in `modules` can be imported.

    Only looks the modules up (`importlib.util.find_spec`), never imports them: the check is cheap
    and loads nothing into a process that may never use the package.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"{needed_for} needs the `{extra}` extra ({', '.join(missing)} not installed): "
                                f"pip install -e '.[{extra}]'")
