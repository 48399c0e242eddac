"""Which snapshots the writer fsyncs: in state.dir (durable) only a drained stop's, the ones the next run
continues; the periodic ones never (their cost against what they could save: tools.benchmark_state --load)."""

from __future__ import annotations

import pytest

from pipeline.stages.temporal.snapshots import SnapshotWriter


class RecordingStore:
    def __init__(self) -> None:
        self.saves: list[tuple[str, bool | None]] = []

    def save(self, snapshot, fsync=None) -> None:
        self.saves.append((snapshot.stream, fsync))

    def remove(self, stream) -> None:
        self.saves.append((stream, "removed"))


class Snap:
    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.wall_time = 0.0


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_drained_stops_snapshots_are_fsynced_and_only_in_a_durable_folder(durable):
    store = RecordingStore()
    writer = SnapshotWriter(store, durable=durable)
    writer.put([Snap("a"), Snap("b")])
    assert writer.wait_idle(5.0)
    writer.put([Snap("a")], final=True)
    writer.forget("b")
    writer.close()
    assert store.saves == [("a", False), ("b", False), ("a", durable), ("b", "removed")]
