"""Command-line conventions shared by the tools: one clear line and an exit status (2 unless a command says
otherwise) on bad input."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence

from pipeline.errors import ActionPipeError


class UsageError(ActionPipeError, ValueError):
    """An argument that is well-formed but cannot be used (names the argument)."""


# Every error of this project names the input and what to do: worth one line to the user. Anything else
# is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ActionPipeError,)


def stop_signal_as_interrupt() -> None:
    """Make SIGTERM (``timeout``, a CI runner, ``kill``) a KeyboardInterrupt in the main thread: the default
    ends the process at once, skipping the ``finally`` that stops the pipelines and servers a tool started
    in sessions of their own, which then outlive it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *,
        user_errors: tuple[type[BaseException], ...] = USER_ERRORS, exit_code: int = 2) -> int:
    """``main(argv)``'s exit status; one of ``user_errors`` becomes an ``error: ...`` line and ``exit_code``."""
    stop_signal_as_interrupt()
    try:
        return main(argv)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
