"""Steps/s of a saturated temporal thread with snapshots on against off (``python -m tools.benchmark_state --load``).

The same table, detector and head as :mod:`tools.bench.snapshot_cost`, stepped
as fast as the thread can for a block of seconds, every stream every round,
the way a temporal stage with more work than it can do runs. With snapshots
on, the real :class:`~pipeline.stages.temporal.snapshots.StreamSnapshots`
ticks after each round (every ``interval_s`` it copies the rows of the
streams that stepped) and a real
:class:`~pipeline.stages.temporal.snapshots.SnapshotWriter` thread writes
them through a ``DirectoryStore``: as the stage writes them (no fsync; only
a drained stop's snapshots are fsynced, in ``state.dir``), or each one
fsynced, the cost that choice avoids. Blocks with snapshots off and on take
turns, so drift in the machine's speed hits both alike; the figure is the
ratio of their steps/s, measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class _Where:
    generation: int
    last_seq: int
    last_t: float | None


def _block(setup, snapshots, seconds: float) -> float:
    """Steps per second over one block of ``seconds`` (snapshots ticking after each round if given)."""
    streams = setup.streams
    rounds = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        setup.step_round()
        rounds += 1
        if snapshots is not None:
            for stream in streams:
                snapshots.stepped(stream)
            where = _Where(1, rounds, float(rounds))
            snapshots.tick(time.monotonic(), setup.table, setup.detector, lambda stream: where)
    return rounds * len(streams) / (time.perf_counter() - start)


def compare(setup, folder: Path, fsync: bool, interval_s: float, seconds: float, blocks: int) -> tuple[float, float]:
    """Median steps/s with snapshots off and on, over ``blocks`` turns of each."""
    import statistics

    from pipeline.stages.temporal.snapshots import SnapshotWriter, StreamSnapshots
    from pipeline.state.store import DirectoryStore

    writer = SnapshotWriter(DirectoryStore(folder, fsync=fsync))
    snapshots = StreamSnapshots(writer, "benchmark-head", "benchmark-backbone", interval_s, time.monotonic())
    off, on = [], []
    try:
        for _ in range(blocks):
            off.append(_block(setup, None, seconds))
            on.append(_block(setup, snapshots, seconds))
            writer.wait_idle(30.0)  # what a block left to write is not the next block's burden
    finally:
        writer.close()
    return statistics.median(off), statistics.median(on)
