"""Start, watch and stop named child processes (multiprocessing with the ``spawn`` method).

Children are plain module-level functions called with plain arguments (strings, numbers,
lists): each child reads its own config and logs what it applied, so nothing but those
arguments crosses the process boundary. A child's exit status is its result: 0 done, 2 a
`SteelInspectError` (logged as one line), 1 a bug (traceback logged), negative a signal.

`stop` sends SIGTERM (children stop cleanly through `inspection.line.process.StopFlag`), waits a
grace period, then kills what is left, so shutdown never hangs.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Iterable
from multiprocessing.process import BaseProcess
from typing import Any

from inspection.errors import SteelInspectError

log = logging.getLogger(__name__)


_stop_requested = False  # set in a child by a SIGTERM that arrived while it was starting


def _child_main(target: Callable[..., Any], name: str, verbose: bool, args: tuple, kwargs: dict) -> None:
    from inspection.cli import setup_logging

    # Until the child installs its own handler (`inspection.line.process.StopFlag`), a SIGTERM ends it
    # cleanly instead of killing it mid-import: a line stopped while it starts is a clean stop.
    signal.signal(signal.SIGTERM, _stopped_while_starting)
    setup_logging(verbose)
    log_ = logging.getLogger(__name__)
    try:
        result = target(*args, **kwargs)
    except SteelInspectError as exc:
        log_.error("%s: %s", name, exc)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException:
        # The start-up stop may surface as another exception (an extension module interrupted
        # while it initialises raises ImportError): still a clean stop.
        if _stop_requested:
            log_.info("%s stopped before it had started", name)
            sys.exit(0)
        log_.exception("%s crashed", name)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def _stopped_while_starting(signum: int, _frame: Any) -> None:
    global _stop_requested
    _stop_requested = True
    raise SystemExit(0)


class Supervisor:
    """A set of named child processes; use as a context manager so all stop on exit."""

    def __init__(self, grace_s: float = 10.0, verbose: bool = False) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._children: dict[str, BaseProcess] = {}
        self.grace_s = grace_s
        self.verbose = verbose
        self._reported: set[str] = set()
        self._stopped: set[str] = set()  # children our SIGTERM ended: killed by it while starting is a clean stop

    def start(self, name: str, target: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Start `target(*args, **kwargs)` in a new process called `name`."""
        if name in self._children and self._children[name].is_alive():
            raise SteelInspectError(f"supervisor: a child named {name!r} is already running")
        process = self._context.Process(
            target=_child_main, name=name, args=(target, name, self.verbose, args, kwargs), daemon=False
        )
        process.start()
        self._children[name] = process
        self._reported.discard(name)
        self._stopped.discard(name)
        log.info("started %s (pid %d)", name, process.pid)

    @property
    def names(self) -> list[str]:
        return list(self._children)

    def alive(self, name: str) -> bool:
        return self._children[name].is_alive()

    def exit_codes(self) -> dict[str, int | None]:
        """Exit status per child; None while it runs."""
        return {name: self._code(name) for name in self._children}

    def ended(self) -> dict[str, int | None]:
        """Children that ended since the last call, with their exit status (for logging or restarts)."""
        done = {n: self._code(n) for n, p in self._children.items() if not p.is_alive() and n not in self._reported}
        self._reported.update(done)
        return done

    def _code(self, name: str) -> int | None:
        """The child's exit status; 0 where our SIGTERM killed it before it had installed a handler (still
        starting, under load even before `_child_main` ran): that is a clean stop, not a failure, and
        `stop`, `ended` and `exit_codes` say so alike."""
        code = self._children[name].exitcode
        return 0 if code == -signal.SIGTERM and name in self._stopped else code

    def wait(
        self,
        names: Iterable[str] | None = None,
        timeout: float | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Wait until the named children (default: all) ended; False on timeout or `stopping()`."""
        wanted = [self._children[n] for n in (names if names is not None else self._children)]
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(p.is_alive() for p in wanted):
            if stopping() or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(0.05)
        return True

    def stop(self, names: Iterable[str] | None = None, grace_s: float | None = None) -> dict[str, int | None]:
        """SIGTERM the named children (default: all), wait `grace_s`, kill the rest; exit codes."""
        chosen = list(names if names is not None else self._children)
        grace = self.grace_s if grace_s is None else grace_s
        terminated = set()
        for name in chosen:
            if self._children[name].is_alive():
                self._children[name].terminate()
                terminated.add(name)
        deadline = time.monotonic() + grace
        for name in chosen:
            process = self._children[name]
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("%s did not stop within %.0f s of SIGTERM: killing it", name, grace)
                process.kill()
                process.join(5.0)
        self._stopped.update(terminated)
        for name in terminated:
            if self._children[name].exitcode == -signal.SIGTERM:
                log.info("%s stopped while starting", name)
        codes = {name: self._code(name) for name in chosen}
        for name, code in codes.items():
            (log.info if code == 0 else log.warning)("%s exited with status %s", name, code)
        return codes

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        if any(p.is_alive() for p in self._children.values()):
            self.stop()
