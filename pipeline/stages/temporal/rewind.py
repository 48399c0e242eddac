"""The replay rewind: after a crash of the temporal worker, a replay is read again from its snapshot's
step, so that the steps the crash lost are scored again and its scores equal the offline scorer's.

The successor restores the stream from its snapshot (generation ``g``, message ``seq``, time ``t``)
and tells the supervisor, which hands the replay to its capture worker again in a new generation
that skips what the file holds up to ``t`` and keeps the step grid (``start_reason`` ``rewind``).
Meanwhile the frames of ``g`` after the snapshot are dropped (``stage_crash``: their steps died with
the predecessor, and come again). The rewind's frames continue the restored state (no reset).

Each once: the predecessor already output the steps it scored after the snapshot. Its scores file
and events file (the temporal worker's own outputs, every line written whole) say exactly which:
the stream's last score line, and its events decided after the snapshot was taken (their
``wall_time`` is later than the snapshot's). Those steps are stepped again quietly (state and
tracks advance, nothing is output) and those events are not sent again. Without a scores file the
steps after the snapshot are output again; the events re-decided then carry the ids they had (the
epoch is the run's, and the rewind's messages are numbered as the generation they replace), so a
receiver that drops repeats by id (docs/outputs.md) sees each once.

:class:`Rewind` decides (pure); :func:`written_after` reads the files' tails (the only I/O).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.events import ActionEvent

log = logging.getLogger(__name__)

# How much of the end of an output file is read for what the predecessor wrote after its snapshots:
# their age is at most state.max_age_s, and a few MB hold many seconds of steps of many streams.
TAIL_BYTES = 4 << 20


@dataclass(frozen=True)
class Written:
    """What a dead predecessor output of one stream after its snapshot."""

    last_step_t: float | None = None  # the stream's last line in the scores file (None: no file, or none there)
    events: frozenset[tuple[str, str, float]] = frozenset()  # (action, kind, t) decided after the snapshot


@dataclass
class Rewind:
    """A replay stream restored after a crash, waiting for (then in) the generation that reads it again."""

    stream: str
    generation: int  # the snapshot's: its frames after ``seq`` are dropped
    seq: int
    t: float
    written: Written = field(default_factory=Written)
    new_generation: int | None = None  # set by the rewind's first frame

    def waiting(self, generation: int) -> bool:
        """A message of ``generation`` comes before the rewind: the old one's frames are not stepped."""
        return self.new_generation is None and generation == self.generation

    def begins(self, generation: int, start: bool, reason: str) -> bool:
        """The first frame of a new ``generation`` is the rewind's (START, reason ``rewind``)."""
        if self.new_generation is None and generation > self.generation and start and reason == "rewind":
            self.new_generation = generation
            return True
        return False

    def quiet(self, generation: int, t: float) -> bool:
        """The step at ``t`` of ``generation`` was output by the predecessor: step it, output nothing."""
        last = self.written.last_step_t
        return generation == self.new_generation and last is not None and t <= last

    def fresh(self, generation: int, events: Iterable[ActionEvent]) -> list[ActionEvent]:
        """``events`` decided at a step of ``generation`` but for those the predecessor already sent."""
        if generation != self.new_generation:
            return list(events)
        return [e for e in events if (e.action, e.kind, round(e.t, 6)) not in self.written.events]

    def numbered(self, generation: int, seq: int) -> tuple[int, int]:
        """The (generation, message number) an event decided at ``seq`` of ``generation`` is named by: the
        rewind's message ``n`` is the replaced generation's ``seq + 1 + n`` (a replay without loop sends
        one message per step), so a re-decided event keeps the id it had."""
        if generation == self.new_generation:
            return self.generation, self.seq + 1 + seq
        return generation, seq


def _tail_lines(path: Path) -> list[str]:
    """The complete lines in the last ``TAIL_BYTES`` of ``path`` ([] when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")[:-1]  # the last: "" or a line not ended
    if start > 0:
        lines = lines[1:]  # cut by the tail: not a whole line
    return [line for line in lines if line.strip()]


def written_after(scores: Path | None, events: Path | None, snapshots: dict[str, float]) -> dict[str, Written]:
    """Per stream of ``snapshots`` (stream -> the snapshot's ``wall_time``): its last step in the scores
    file and the events the events file holds that were decided after the snapshot was taken."""
    last: dict[str, float] = {}
    for line in _tail_lines(scores) if scores is not None else []:
        try:
            record = json.loads(line)
            if record.get("stream") in snapshots:
                last[record["stream"]] = float(record["t"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("temporal: %s: a line that is not a step (%s): what it held is output again", scores, exc)
    decided: dict[str, set] = {stream: set() for stream in snapshots}
    for line in _tail_lines(events) if events is not None else []:
        try:
            record = json.loads(line)
            stream = record.get("stream")
            if stream in snapshots and float(record["wall_time"]) > snapshots[stream]:
                decided[stream].add((record["action"], record["kind"], round(float(record["t"]), 6)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("temporal: %s: a line that is not an event (%s): what it held may be sent again", events, exc)
    return {stream: Written(last.get(stream), frozenset(decided[stream])) for stream in snapshots}
