"""Command-line conventions shared by the tools: one clear line and an exit status (2 unless a command says
otherwise) on bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from engines.base import EngineError, FrameBatchError
from engines.efficientnet_lite import WeightsNotFoundError
from engines.temporal_head import CheckpointError
from tools.evaluation.annotations import AnnotationError
from tools.training.features_cache import FeatureCacheError
from pipeline.scores import ScoresError
from pipeline.sources.decoding import VideoOpenError


class UsageError(ValueError):
    """An argument that is well-formed but cannot be used (names the argument)."""


# Errors that mean "the input is wrong", worth one line to the user; anything
# else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    AnnotationError,
    FeatureCacheError,
    CheckpointError,
    EngineError,
    FrameBatchError,
    VideoOpenError,
    WeightsNotFoundError,
    ScoresError,
)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *,
        user_errors: tuple[type[BaseException], ...] = USER_ERRORS, exit_code: int = 2) -> int:
    """``main(argv)``'s exit status; one of ``user_errors`` becomes an ``error: ...`` line and ``exit_code``."""
    try:
        return main(argv)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
