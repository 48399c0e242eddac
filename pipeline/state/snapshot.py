"""What a stream's state is: everything the temporal stage needs to continue that stream exactly.

Two owners hold it while a stream runs: the state table (a row of the GRU's
tensors, :class:`RowState`) and the event detector (the stream's per-class
tracks, a JSON-able dict from ``ActionEventDetector.export_track``). A
:class:`StreamSnapshot` puts them together with where the stream was (its
generation, the last message number and stream time stepped) and what they
belong to (the identities of the head and the backbone, ``identity.py``).

Pure data: numpy arrays, no torch and no I/O, so a store or a test can make
and read snapshots without a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import ActionPipeError
from pipeline.sources.uri import STREAM_NAME_PATTERN


class SnapshotError(ActionPipeError, ValueError):
    """A stream snapshot that cannot be made or used as given."""


@dataclass(frozen=True)
class RowShape:
    """The shape of one stream's row for a head: checked before a row is written into a table."""

    layers: int
    hidden: int
    previous: int


# eq=False: fields hold arrays, whose == is elementwise; identity is the honest equality.
@dataclass(frozen=True, eq=False)
class RowState:
    """One stream's row of the state table, on the host.

    ``hidden`` [layers, hidden] float32: the GRU hidden state of every layer.
    ``previous`` [state_vector_dim] float32: the previous step's frame vector r_{t-1} (then the
    moving average m_{t-1} for heads with one): the head is fed the change since the previous step.
    ``has_previous``: False right after a START, when there is no previous step to take the change from.
    """

    hidden: np.ndarray = field(repr=False)
    previous: np.ndarray = field(repr=False)
    has_previous: bool

    def __post_init__(self) -> None:
        for name, ndim in (("hidden", 2), ("previous", 1)):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.ndim != ndim:
                raise SnapshotError(f"{name} must be a {ndim}-D float32 array, got "
                                    f"{getattr(value, 'dtype', type(value).__name__)} {np.shape(value)}")
            if not np.all(np.isfinite(value)):
                raise SnapshotError(f"{name} holds values that are not finite")
        if not isinstance(self.has_previous, (bool, np.bool_)):
            raise SnapshotError(f"has_previous must be a bool, got {self.has_previous!r}")

    @property
    def shape(self) -> RowShape:
        return RowShape(self.hidden.shape[0], self.hidden.shape[1], self.previous.shape[0])


@dataclass(frozen=True, eq=False)
class StreamSnapshot:
    """One stream's state after its step at message ``seq`` of ``generation`` (stream time ``t``).

    ``wall_time`` is when it was taken (seconds since the epoch: it must mean the same after a
    restart and on another machine, which a monotonic clock does not). ``track`` is the detector's
    export for the stream; treat it as read-only.
    """

    stream: str
    generation: int
    seq: int
    t: float
    wall_time: float
    head_id: str
    backbone_id: str
    row: RowState
    track: dict[str, Any] = field(repr=False)
    # How the events of its last step are named (run epoch, generation, message number): a node that
    # continues the stream names its events after these, so an event decided again keeps its id.
    event_numbering: tuple[str, int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.stream, str) or not STREAM_NAME_PATTERN.match(self.stream):
            raise SnapshotError(f"stream name {self.stream!r} is not a valid stream name")
        for name in ("generation", "seq"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SnapshotError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("t", "wall_time"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SnapshotError(f"{name} must be a finite number, got {value!r}")
        for name in ("head_id", "backbone_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SnapshotError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.row, RowState):
            raise SnapshotError(f"row must be a RowState, got {type(self.row).__name__}")
        if self.event_numbering is not None:
            numbering = self.event_numbering
            if (not isinstance(numbering, tuple) or len(numbering) != 3 or not isinstance(numbering[0], str)
                    or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbering[1:])):
                raise SnapshotError(f"event_numbering must be (epoch, generation, seq), got {numbering!r}")
        if not isinstance(self.track, dict):
            raise SnapshotError(f"track must be a dict (the detector's export), got {type(self.track).__name__}")
