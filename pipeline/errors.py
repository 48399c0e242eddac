"""The one base of every error this project raises on purpose.

Each module keeps its own exceptions beside the code that raises them (a bad
URI in ``sources.uri``, a refused stream request in ``supervision.registry``,
an engine that cannot run in ``engines.base``), and every one of them derives
from :class:`ActionPipeError`. So the command line, the Python API and the
stage bootstrap each catch one thing, and each error carries what they need
to know about it:

* ``exit_status``: what the command line exits with when it ends a run
  (2 for a bad command line or configuration, 1 otherwise);
* ``restart_helps``: inside a stage process, whether restarting the stage
  could get past it. Errors about the user's input or machine (a model that
  does not load, an engine this machine cannot run) would meet the next
  process the same way; a peer's malformed message or a broken internal
  invariant might not.

Two checks that constructors share close the module. It imports nothing of
ours, so any module (``engines`` included) can use it.
"""

from __future__ import annotations

import math


class ActionPipeError(Exception):
    """An error the project raised on purpose; its message names what was wrong and what to do."""

    exit_status = 1
    restart_helps = False


class ConfigError(ActionPipeError, ValueError):
    """A configuration or command line that cannot be used; the message says where and why."""

    exit_status = 2


class PipelineError(ActionPipeError, RuntimeError):
    """The pipeline cannot start or run; the message says which part and why."""


def check_whole(name: str, value: object, minimum: int, error: type[Exception], meaning: str = "") -> int:
    """``value`` when it is a whole number (a bool is not) of at least ``minimum``; otherwise ``error``
    naming ``name``, what it means, and what it got."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be an integer >= {minimum}{f' ({meaning})' if meaning else ''}, got {value!r}")
    return value


def check_seconds(name: str, value: object, error: type[Exception], positive: bool = False) -> float:
    """``value`` as float seconds when it is a finite number >= 0 (> 0 when ``positive``); otherwise ``error``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise error(f"{name} must be a finite number of seconds {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)
