"""The temporal stage's per-stream state: one preallocated table, one batched GRU step.

Every stream owns a row of three tensors on the head's device
(``hidden [capacity, layers, hidden]``, ``previous [capacity, V]``,
``has_previous [capacity]``). A step gathers the rows of the streams in the
batch, runs ONE batched ``head.step``, and scatters the new state back, so
streams never share or leak state and no per-step allocation depends on how
many streams exist.

Sequence semantics (as Triton's sequence batcher):

* START zeroes the stream's row before its step; a frame of an unknown stream
  without START is treated as a START and counted (``implicit_start``).
* END frees the row after its step.
* :meth:`StreamStateTable.evict_idle` frees the rows of streams not seen for
  ``idle_timeout_s`` (counted). Until it runs, an idle stream keeps its state
  and a late frame simply continues it.
* A stream appears at most once per step; the caller splits batches.
* Snapshots: :meth:`export_streams` copies rows to the host as
  ``RowState`` (``pipeline/state/snapshot.py``); :meth:`import_stream` writes
  one back into a row, taken like a new stream's (but not reset), so the
  stream's next step continues as if it had never stopped.
* Capacity: a new stream takes a free row; with none free, the least
  recently seen stream idle for ``idle_timeout_s`` is evicted to make room
  (counted; :meth:`take_evicted` reports it, so the caller can close its
  events). With no idle stream either, :class:`StateTableFull` is raised and
  the table is left unchanged: dropping a live stream's state silently would
  corrupt its scores.

Pure logic apart from the tensor work: time is the monotonic ``now`` the
caller passes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from engines.temporal_head import StreamState, TemporalHead
from pipeline.errors import ActionPipeError, check_seconds, check_whole
from pipeline.state.snapshot import RowShape, RowState


class StateTableError(ActionPipeError, RuntimeError):
    """The state table cannot do what was asked."""

    restart_helps = True


class StateTableConfigError(StateTableError, ValueError):
    """A state table parameter out of range, or a head it cannot serve."""


class StateTableFull(StateTableError):
    """Every row holds a live stream; a new stream cannot be admitted."""

    def __init__(self, capacity: int, needed: int, rejected: Sequence[str]) -> None:
        super().__init__(
            f"state table full: capacity {capacity} rows all held by streams seen within the idle timeout; "
            f"{needed} new stream(s) need a row ({', '.join(map(repr, rejected))}). "
            "Raise the capacity or lower the idle timeout."
        )
        self.capacity = capacity
        self.needed = needed
        self.rejected = tuple(rejected)


class DuplicateStreamError(StateTableError, ValueError):
    """A stream appears twice in one batch: its second frame needs the first one's state."""

    def __init__(self, stream: str, seqs: Sequence[int]) -> None:
        super().__init__(
            f"stream {stream!r} appears {len(seqs)} times in one step (seqs {list(seqs)}); "
            "split the batch so each stream steps once"
        )
        self.stream = stream
        self.seqs = tuple(seqs)


class StepInputError(StateTableError, ValueError):
    """A step input whose arrays do not fit the head."""


class UnknownStreamError(StateTableError, LookupError):
    """A stream that holds no row was asked for its row."""


class RowImportError(StateTableError, ValueError):
    """A row to import whose shape does not fit this head's."""

    restart_helps = False


# eq=False: fields hold arrays, whose == is elementwise; identity is the honest equality.
@dataclass(frozen=True, eq=False)
class StepInput:
    stream: str
    seq: int
    t: float
    embedding: np.ndarray = field(repr=False)  # [E] float32
    stats: np.ndarray = field(repr=False)  # [L] float32
    start: bool = False
    end: bool = False


@dataclass(frozen=True, eq=False)
class StepOutput:
    stream: str
    seq: int
    t: float
    probs: np.ndarray = field(repr=False)  # [C], in the head's class order
    reset: bool  # the state was zeroed before this step (START or implicit start)
    implicit_start: bool  # a frame of an unknown stream arrived without START
    end: bool  # the row was freed after this step


class StreamStateTable:
    """Owns every stream's recurrent state for one temporal worker."""

    def __init__(
        self, head: TemporalHead, capacity: int, idle_timeout_s: float, device: str | torch.device = "cpu"
    ) -> None:
        check_whole("capacity", capacity, 1, StateTableConfigError)
        idle_timeout_s = check_seconds("idle_timeout_s", idle_timeout_s, StateTableConfigError, positive=True)
        self.device = torch.device(device)
        head_device = next(head.parameters()).device
        if head_device.type != self.device.type:
            raise StateTableConfigError(f"the head lives on {head_device}, the state table on {self.device}")
        self.head = head
        self.capacity = capacity
        self.idle_timeout_s = float(idle_timeout_s)
        cfg = head.config
        self.embedding_dim = cfg.backbone.embedding_dim
        self.stats_dim = cfg.backbone.stats_dim
        initial = head.initial_state(capacity, self.device)
        self._hidden = initial.hidden
        self._previous = initial.previous
        self._has_previous = initial.has_previous
        # On the CPU the rows are gathered and scattered through NumPy views of the same memory: a NumPy
        # fancy index costs a microsecond, a PyTorch op several, and a step does seven of them per round.
        self._host_rows = (self._hidden.numpy(), self._previous.numpy(), self._has_previous.numpy()) \
            if self.device.type == "cpu" else None
        self._rows: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        # Pop from the end: row 0 is handed out first, which keeps tests and dumps readable.
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._evicted_in_step: list[str] = []
        self.evictions = 0
        self.implicit_starts = 0

    # -- queries ---------------------------------------------------------------
    @property
    def active_streams(self) -> tuple[str, ...]:
        return tuple(self._rows)

    @property
    def free_rows(self) -> int:
        return len(self._free)

    def row_of(self, stream: str) -> int | None:
        return self._rows.get(stream)

    @property
    def row_shape(self) -> RowShape:
        return RowShape(self._hidden.shape[1], self._hidden.shape[2], self._previous.shape[1])

    def next_eviction_in(self, now: float) -> float | None:
        """Seconds until :meth:`evict_idle` would free a row (0.0 if now); None when no stream is held."""
        if not self._last_seen:
            return None
        return max(0.0, min(self._last_seen.values()) + self.idle_timeout_s - now)

    # -- updates ---------------------------------------------------------------
    def warm_up(self, largest_batch: int) -> None:
        """Step the head once for each power-of-two batch up to ``largest_batch`` on throwaway zeros (no row
        is touched), so that no stream's first step pays for lazy initialisation: on an H200 the first CUDA
        step took 0.25-0.4 s (cuDNN loading its GRU kernels), and every step queued behind it waited as long."""
        size = 1
        with torch.inference_mode():
            while True:
                initial = self.head.initial_state(size, self.device)
                embedding = torch.zeros((size, self.embedding_dim), device=self.device)
                stats = torch.zeros((size, self.stats_dim), device=self.device)
                probs, _ = self.head.step(embedding, stats, initial)
                probs.float().cpu()  # waits for the device
                if size >= largest_batch:
                    return
                size = min(2 * size, largest_batch)

    def step(self, batch: Sequence[StepInput], now: float) -> list[StepOutput]:
        """One GRU step for every stream in ``batch``; outputs in the batch's order."""
        if not batch:
            return []
        if self.head.training:
            raise StateTableError("the head is in training mode (dropout on); call head.eval() before streaming")
        self._check_inputs(batch)
        new_streams = [x.stream for x in batch if x.stream not in self._rows]
        self._make_room(len(new_streams), {x.stream for x in batch}, now, new_streams)

        rows: list[int] = []
        resets: list[bool] = []
        implicit: list[bool] = []
        for x in batch:
            row = self._rows.get(x.stream)
            is_new = row is None
            if row is None:
                row = self._free.pop()
                self._rows[x.stream] = row
            rows.append(row)
            resets.append(x.start or is_new)
            implicit.append(is_new and not x.start)
        self.implicit_starts += sum(implicit)

        embedding = np.empty((len(batch), self.embedding_dim), dtype=np.float32)
        stats = np.empty((len(batch), self.stats_dim), dtype=np.float32)
        for i, x in enumerate(batch):
            embedding[i] = x.embedding
            stats[i] = x.stats[:self.stats_dim]
        reset_rows = [r for r, reset in zip(rows, resets) if reset]
        with torch.inference_mode():
            if self._host_rows is not None:
                hidden, previous, has_previous = self._host_rows
                rows = np.array(rows)  # indexing by an array, not a list, spares NumPy converting it six times
                if reset_rows:
                    hidden[reset_rows] = 0.0
                    previous[reset_rows] = 0.0
                    has_previous[reset_rows] = False
                state = StreamState(torch.from_numpy(hidden[rows]), torch.from_numpy(previous[rows]),
                                    torch.from_numpy(has_previous[rows]))
                probs, new_state = self.head.step(torch.from_numpy(embedding), torch.from_numpy(stats), state)
                hidden[rows] = new_state.hidden.numpy()
                previous[rows] = new_state.previous.numpy()
                has_previous[rows] = new_state.has_previous.numpy()
            else:
                index = torch.tensor(rows, dtype=torch.long, device=self.device)
                if reset_rows:
                    self._reset_rows(torch.tensor(reset_rows, dtype=torch.long, device=self.device))
                state = StreamState(
                    hidden=self._hidden.index_select(0, index),
                    previous=self._previous.index_select(0, index),
                    has_previous=self._has_previous.index_select(0, index),
                )
                probs, new_state = self.head.step(torch.from_numpy(embedding).to(self.device),
                                                  torch.from_numpy(stats).to(self.device), state)
                self._hidden.index_copy_(0, index, new_state.hidden)
                self._previous.index_copy_(0, index, new_state.previous)
                self._has_previous.index_copy_(0, index, new_state.has_previous)
            # A new array each step: each output's probs may be a view of it, nobody writes it again.
            probs_np = probs.float().cpu().numpy()

        outputs = []
        for i, x in enumerate(batch):
            self._last_seen[x.stream] = now
            if x.end:
                self._free_row(x.stream)
            outputs.append(StepOutput(x.stream, x.seq, x.t, probs_np[i], resets[i], implicit[i], x.end))
        return outputs

    def export_streams(self, streams: Sequence[str]) -> dict[str, RowState]:
        """Copies of the rows of ``streams`` on the host (one gather, one transfer from the device)."""
        missing = [s for s in streams if s not in self._rows]
        if missing:
            raise UnknownStreamError(f"stream(s) {missing} hold no row in the state table")
        if not streams:
            return {}
        with torch.inference_mode():
            index = torch.tensor([self._rows[s] for s in streams], dtype=torch.long, device=self.device)
            hidden = self._hidden.index_select(0, index).float().cpu().numpy()
            previous = self._previous.index_select(0, index).float().cpu().numpy()
            has_previous = self._has_previous.index_select(0, index).cpu().numpy()
        # Copies: a RowState must not see later steps through a view of the batch.
        return {s: RowState(hidden[i].copy(), previous[i].copy(), bool(has_previous[i])) for i, s in enumerate(streams)}

    def export_stream(self, stream: str) -> RowState:
        return self.export_streams([stream])[stream]

    def import_stream(self, stream: str, row: RowState, now: float) -> None:
        """Make ``row`` the state of ``stream`` (seen at ``now``): its next step continues from it.

        A stream without a row takes one as a new stream would (evicting an idle one if the table is
        full, see :meth:`take_evicted`; :class:`StateTableFull` if none can go), but is not reset:
        the imported state is the state. A stream holding a row has it overwritten."""
        if row.shape != self.row_shape:
            raise RowImportError(f"stream {stream!r}: a row of shape {row.shape} does not fit this head's {self.row_shape}")
        if stream not in self._rows:
            self._make_room(1, {stream}, now, [stream])
            self._rows[stream] = self._free.pop()
        index = self._rows[stream]
        with torch.inference_mode():
            self._hidden[index] = torch.from_numpy(row.hidden).to(self.device, self._hidden.dtype)
            self._previous[index] = torch.from_numpy(row.previous).to(self.device, self._previous.dtype)
            self._has_previous[index] = bool(row.has_previous)
        self._last_seen[stream] = now

    def evict_idle(self, now: float) -> list[str]:
        """Free the rows of streams not seen for ``idle_timeout_s``; returns them, least recently seen first."""
        idle = sorted(
            (s for s, seen in self._last_seen.items() if now - seen >= self.idle_timeout_s),
            key=self._last_seen.__getitem__,
        )
        for stream in idle:
            self._free_row(stream)
        self.evictions += len(idle)
        return idle

    def release(self, stream: str) -> bool:
        """Free ``stream``'s row without a step (its END was lost); not counted as an eviction."""
        if stream not in self._rows:
            return False
        self._free_row(stream)
        return True

    def take_evicted(self) -> list[str]:
        """Streams that :meth:`step` evicted to make room since the last call (oldest first)."""
        evicted, self._evicted_in_step = self._evicted_in_step, []
        return evicted

    # -- internals -------------------------------------------------------------
    def _check_inputs(self, batch: Sequence[StepInput]) -> None:
        if len({x.stream for x in batch}) != len(batch):
            seen: dict[str, list[int]] = {}
            for x in batch:
                seen.setdefault(x.stream, []).append(x.seq)
            stream, seqs = next((stream, seqs) for stream, seqs in seen.items() if len(seqs) > 1)
            raise DuplicateStreamError(stream, seqs)
        for x in batch:
            # More stats than the head uses is fine: it takes the first stats_dim (engines/spec.py). The shapes
            # must match exactly: a row assigned from a shorter array would be broadcast, not refused.
            embedding_shape = x.embedding.shape if isinstance(x.embedding, np.ndarray) else np.shape(x.embedding)
            stats_shape = x.stats.shape if isinstance(x.stats, np.ndarray) else np.shape(x.stats)
            if embedding_shape != (self.embedding_dim,) or len(stats_shape) != 1 or stats_shape[0] < self.stats_dim:
                raise StepInputError(
                    f"stream {x.stream!r} seq {x.seq}: embedding {embedding_shape} / stats "
                    f"{stats_shape} do not fit the head's ({self.embedding_dim},) / ({self.stats_dim},) or more"
                )

    def _make_room(self, needed: int, in_batch: set[str], now: float, new_streams: list[str]) -> None:
        shortfall = needed - len(self._free)
        if shortfall <= 0:
            return
        # Only streams outside this batch may go: the batch's own streams are live by definition.
        candidates = sorted(
            (s for s, seen in self._last_seen.items() if s not in in_batch and now - seen >= self.idle_timeout_s),
            key=self._last_seen.__getitem__,
        )
        if len(candidates) < shortfall:
            # Checked before any change, so the caller can retry a smaller batch on an intact table.
            raise StateTableFull(self.capacity, needed, new_streams)
        for stream in candidates[:shortfall]:
            self._free_row(stream)
            self._evicted_in_step.append(stream)
        self.evictions += shortfall

    def _reset_rows(self, rows: torch.Tensor) -> None:
        self._hidden.index_fill_(0, rows, 0.0)
        self._previous.index_fill_(0, rows, 0.0)
        self._has_previous.index_fill_(0, rows, False)

    def _free_row(self, stream: str) -> None:
        self._free.append(self._rows.pop(stream))
        self._last_seen.pop(stream, None)
