"""What every source reader gives and how it fails: timestamped frames, and errors that say whether
retrying can help. The readers themselves: :mod:`pipeline.sources.readers` (files, folders, cameras,
HTTP) and :mod:`pipeline.sources.rtsp` (RTSP)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.errors import ActionPipeError


class SourceError(ActionPipeError, RuntimeError):
    """A source that cannot be opened or read; the message names it without credentials."""


class SourceOpenError(SourceError):
    """A source that did not open. ``permanent``: retrying cannot help (a missing file, a malformed URL);
    ``needs_person``: the server answered what usually takes a person to fix (401, 403, 404), so the
    stream retries slowly instead of at its backoff."""

    def __init__(self, message: str, permanent: bool, needs_person: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.needs_person = needs_person


@dataclass(frozen=True)
class RawFrame:
    t: float  # seconds of stream time
    image: np.ndarray | None  # BGR uint8 [H, W, 3]; None when the caller did not want this frame
    age_s: float = 0.0  # how long before it was read the frame was captured (live sources that can tell)


def want_all(_t: float) -> bool:
    return True


class FrameReader(Protocol):
    is_live: bool
    fps: float | None
    decode_errors: int  # frames skipped because they could not be decoded, so far
    ended_early: bool  # a recorded source stopped short of its announced length

    def read(self, want: Callable[[float], bool] = want_all) -> RawFrame | None:
        """The next frame, or None at the end of the stream (or when a live stream drops)."""

    def close(self) -> None: ...
