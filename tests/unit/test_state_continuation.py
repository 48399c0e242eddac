"""A stream continued from its snapshot steps exactly as if it had never stopped.

The shipped demo head over synthetic scenes that change every few steps (so
actions start and end), one stream stepped alone as the reference; at every
step k its row and event track are exported, written to the snapshot file's
bytes and read back, imported into a fresh table and detector, and steps
k+1.. run there: the scores are bitwise equal and the events identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from engines.temporal_head import load_head
from pipeline.config import DEFAULT_MODEL
from pipeline.events import ActionEventDetector, HysteresisConfig
from pipeline.stages.temporal.state_table import (
    RowImportError,
    StateTableFull,
    StepInput,
    StreamStateTable,
    UnknownStreamError,
)
from pipeline.state.snapshot import RowState, StreamSnapshot
from pipeline.state.snapshot_file import decode, encode

STEPS = 48
STEP_S = 0.25
# Low thresholds and short runs, so that this head on these scenes opens and closes actions often.
HYSTERESIS = HysteresisConfig(on_threshold=0.3, off_threshold=0.15, min_on_steps=2, min_off_steps=2, warmup_steps=1,
                              onset_threshold=0.1)


@pytest.fixture(scope="module")
def head():
    return load_head(DEFAULT_MODEL)[0]


def _scenes(head, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames of four scenes in turn, eight steps each, with noise: the head sees changes and actions."""
    rng = np.random.default_rng(seed)
    e, s = head.config.backbone.embedding_dim, head.config.backbone.stats_dim
    bases = [(rng.random(e) * 2).astype(np.float32) for _ in range(4)]
    looks = [rng.random(s).astype(np.float32) for _ in range(4)]
    emb = np.stack([bases[k // 8 % 4] + 0.05 * rng.standard_normal(e).astype(np.float32) for k in range(STEPS)])
    stats = np.stack([looks[k // 8 % 4] * (1 + 0.3 * np.sin(k / 3)) for k in range(STEPS)]).astype(np.float32)
    return emb, stats


def _step(table, detector, stream, k, emb, stats, others=()):
    batch = [StepInput(stream, k, k * STEP_S, emb[k], stats[k], start=k == 0)]
    batch += [StepInput(name, k, k * STEP_S, e[k], s[k], start=k == 0) for name, (e, s) in others]
    out = table.step(batch, now=k * STEP_S)[0]
    events = detector.update(stream, out.t, out.probs, wall_time=out.t)
    return out.probs, events


def _reference(head, emb, stats):
    """Scores and events of one stream stepped alone, and its snapshot after each step."""
    table = StreamStateTable(head, capacity=4, idle_timeout_s=60.0)
    detector = ActionEventDetector(head.config.classes, HYSTERESIS)
    probs, events, snapshots, open_at = [], [], [], []
    for k in range(STEPS):
        p, ev = _step(table, detector, "cam", k, emb, stats)
        probs.append(p)
        events.append(ev)
        open_at.append(detector.active_actions("cam"))
        snapshot = StreamSnapshot(stream="cam", generation=3, seq=k, t=k * STEP_S, wall_time=1e9 + k, head_id="h",
                                  backbone_id="b", row=table.export_stream("cam"), track=detector.export_track("cam"))
        snapshots.append(decode(encode(snapshot), "memory"))  # through the file's bytes and back
    return probs, events, snapshots, open_at


def test_a_stream_continued_from_any_step_scores_and_decides_exactly_as_if_never_stopped(head):
    emb, stats = _scenes(head, seed=5)
    probs, events, snapshots, open_at = _reference(head, emb, stats)
    # The test means something only if actions open and close, and some split falls inside one.
    assert sum(len(e) for e in events) >= 4 and any(open_at[:-1])
    for k in range(STEPS - 1):
        snapshot = snapshots[k]
        table = StreamStateTable(head, capacity=4, idle_timeout_s=60.0)
        detector = ActionEventDetector(head.config.classes, HYSTERESIS)
        table.import_stream(snapshot.stream, snapshot.row, now=0.0)
        detector.import_track(snapshot.stream, snapshot.track)
        assert detector.active_actions("cam") == open_at[k]
        for j in range(k + 1, STEPS):
            p, ev = _step(table, detector, "cam", j, emb, stats)
            assert np.array_equal(p, probs[j]), f"split after step {k}: scores differ at step {j}"
            assert ev == events[j], f"split after step {k}: events differ at step {j}"
        assert table.implicit_starts == 0


def test_in_a_batch_with_other_streams_and_another_row_the_continuation_stays_within_float_noise(head):
    """Batching changes the matrix shapes, so the BLAS kernels may sum in another order: not bitwise, but close."""
    emb, stats = _scenes(head, seed=6)
    probs, _, snapshots, _ = _reference(head, emb, stats)
    k = STEPS // 2
    table = StreamStateTable(head, capacity=8, idle_timeout_s=60.0)
    others = [(f"other{i}", _scenes(head, seed=10 + i)) for i in range(5)]
    detector = ActionEventDetector(head.config.classes, HYSTERESIS)
    for j in range(k + 1):  # the others take rows 0..4 first, so "cam" lands on another row than in the reference
        table.step([StepInput(n, j, j * STEP_S, e[j], s[j], start=j == 0) for n, (e, s) in others], now=j * STEP_S)
    table.import_stream("cam", snapshots[k].row, now=k * STEP_S)
    assert table.row_of("cam") == 5
    worst = 0.0
    for j in range(k + 1, STEPS):
        p, _ = _step(table, detector, "cam", j, emb, stats, others)
        worst = max(worst, float(np.abs(p - probs[j]).max()))
    assert worst < 1e-5


def test_export_copies_and_import_overwrites_a_held_row(head):
    emb, stats = _scenes(head, seed=7)
    table = StreamStateTable(head, capacity=2, idle_timeout_s=60.0)
    table.step([StepInput("a", 0, 0.0, emb[0], stats[0], start=True)], now=0.0)
    first = table.export_stream("a")
    table.step([StepInput("a", 1, 0.25, emb[1], stats[1])], now=0.25)
    second = table.export_stream("a")
    assert not np.array_equal(first.hidden, second.hidden)  # a later step did not reach the earlier copy
    assert first.has_previous and first.hidden.dtype == np.float32
    assert (first.hidden.shape, first.previous.shape) == ((head.config.num_layers, head.config.hidden_size),
                                                          (head.config.state_vector_dim,))
    table.import_stream("a", first, now=0.5)
    assert np.array_equal(table.export_stream("a").hidden, first.hidden) and table.free_rows == 1


def test_import_takes_a_row_as_a_new_stream_would_and_refuses_what_does_not_fit(head):
    table = StreamStateTable(head, capacity=1, idle_timeout_s=10.0)
    shape = table.row_shape
    row = RowState(np.ones((shape.layers, shape.hidden), np.float32), np.ones(shape.previous, np.float32), True)
    table.import_stream("a", row, now=0.0)
    with pytest.raises(StateTableFull):
        table.import_stream("b", row, now=5.0)  # "a" was seen 5 s ago: not idle, not evicted
    table.import_stream("b", row, now=20.0)
    assert table.take_evicted() == ["a"] and table.active_streams == ("b",)
    with pytest.raises(UnknownStreamError, match="'a'"):
        table.export_stream("a")
    wrong = RowState(np.ones((shape.layers + 1, shape.hidden), np.float32), np.ones(shape.previous, np.float32), True)
    with pytest.raises(RowImportError, match="does not fit"):
        table.import_stream("b", wrong, now=21.0)
