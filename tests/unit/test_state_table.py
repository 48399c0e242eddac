"""The temporal stage's state table: interleaved streams step exactly as each would alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.backbone import EFFICIENTNET_LITE0
from engines.temporal_head import HeadConfig, TemporalHead
from pipeline.stages.temporal.state_table import (
    DuplicateStreamError,
    StateTableConfigError,
    StateTableError,
    StateTableFull,
    StepInput,
    StepInputError,
    StreamStateTable,
)

ATOL = 1e-6
E, L = EFFICIENTNET_LITE0.embedding_dim, EFFICIENTNET_LITE0.stats_dim


# The default head, and a small two-layer one (the table must gather every layer of a row).
HEAD_SIZES = {"default": {}, "two_layers": dict(projection_dim=64, hidden_size=32, num_layers=2)}


@pytest.fixture(scope="module", params=list(HEAD_SIZES))
def head(request) -> TemporalHead:
    torch.manual_seed(0)
    config = HeadConfig(
        classes=("background", "a", "b"), step_rate_hz=4.0, backbone=EFFICIENTNET_LITE0, **HEAD_SIZES[request.param]
    )
    head = TemporalHead(config)
    # Non-trivial standardisation, so a difference-term computed from the wrong row would show.
    head.input_mean.normal_(0, 0.1)
    head.input_std.uniform_(0.5, 2.0)
    return head.eval()


def _frames(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    emb = (rng.random((steps, E)) * 3).astype(np.float32)
    stats = rng.random((steps, L)).astype(np.float32)
    return emb, stats


def _offline(head: TemporalHead, emb: np.ndarray, stats: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = head.forward_sequence(torch.from_numpy(emb)[None], torch.from_numpy(stats)[None]).logits
    return logits.softmax(-1)[0].numpy()


def _input(stream: str, k: int, emb: np.ndarray, stats: np.ndarray, *, start: bool = False, end: bool = False):
    return StepInput(stream, seq=k, t=k * 0.25, embedding=emb[k], stats=stats[k], start=start, end=end)


def test_interleaved_streams_match_each_stream_run_alone(head, rng):
    # Seven streams of different lengths through four rows: rows are reused after END.
    lengths = {"s0": 9, "s1": 4, "s2": 12, "s3": 1, "s4": 7, "s5": 10, "s6": 5}
    data = {s: _frames(rng, n) for s, n in lengths.items()}
    table = StreamStateTable(head, capacity=4, idle_timeout_s=60.0)
    waiting = list(lengths)
    live: list[str] = []
    cursor = {s: 0 for s in lengths}
    got: dict[str, list[np.ndarray]] = {s: [] for s in lengths}
    now = 0.0
    while waiting or live:
        while waiting and len(live) < 4:
            live.append(waiting.pop(0))
        # A different mix of the live streams each step (never empty), at most one frame each.
        mix = [s for s in live if rng.random() < 0.6] or [live[0]]
        rng.shuffle(mix)
        batch = []
        for s in mix:
            k = cursor[s]
            emb, stats = data[s]
            batch.append(_input(s, k, emb, stats, start=k == 0, end=k == lengths[s] - 1))
        outputs = table.step(batch, now)
        assert [o.stream for o in outputs] == mix
        for o in outputs:
            got[o.stream].append(o.probs)
            cursor[o.stream] += 1
            assert o.seq == cursor[o.stream] - 1
            assert o.reset == (o.seq == 0) and not o.implicit_start
            if o.end:
                live.remove(o.stream)
        now += 0.05
    for s in lengths:
        np.testing.assert_allclose(np.stack(got[s]), _offline(head, *data[s]), atol=ATOL, rtol=0)
    assert table.active_streams == () and table.free_rows == 4
    assert table.implicit_starts == 0 and table.evictions == 0


def test_warming_up_touches_no_row_and_changes_no_result(head, rng):
    emb, stats = _frames(rng, 3)
    table = StreamStateTable(head, capacity=4, idle_timeout_s=60.0)
    table.step([_input("a", 0, emb, stats, start=True)], 0.0)
    table.warm_up(4)  # sizes 1, 2 and 4, on zeros
    assert table.active_streams == ("a",) and table.free_rows == 3
    got = [o.probs for o in table.step([_input("a", 1, emb, stats)], 0.1) + table.step([_input("a", 2, emb, stats)], 0.2)]
    np.testing.assert_allclose(np.stack(got), _offline(head, emb, stats)[1:], atol=ATOL, rtol=0)


def test_start_mid_stream_resets_to_a_fresh_run_from_there(head, rng):
    emb, stats = _frames(rng, 10)
    other_emb, other_luma = _frames(rng, 10)
    table = StreamStateTable(head, capacity=2, idle_timeout_s=60.0)
    probs = []
    for k in range(10):
        batch = [
            _input("cam", k, emb, stats, start=k in (0, 6)),
            _input("other", k, other_emb, other_luma, start=k == 0),
        ]
        out = table.step(batch, now=float(k))
        probs.append(out[0].probs)
        assert out[0].reset == (k in (0, 6))
    np.testing.assert_allclose(np.stack(probs[:6]), _offline(head, emb[:6], stats[:6]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.stack(probs[6:]), _offline(head, emb[6:], stats[6:]), atol=ATOL, rtol=0)


def test_a_frame_of_an_unknown_stream_without_start_is_an_implicit_start(head, rng):
    emb, stats = _frames(rng, 3)
    table = StreamStateTable(head, capacity=2, idle_timeout_s=60.0)
    outputs = [table.step([_input("cam", k, emb, stats)], now=float(k))[0] for k in range(3)]
    assert [o.implicit_start for o in outputs] == [True, False, False]
    assert [o.reset for o in outputs] == [True, False, False]
    assert table.implicit_starts == 1
    np.testing.assert_allclose(np.stack([o.probs for o in outputs]), _offline(head, emb, stats), atol=ATOL, rtol=0)


def test_a_stream_twice_in_one_batch_is_refused_and_changes_nothing(head, rng):
    emb, stats = _frames(rng, 2)
    table = StreamStateTable(head, capacity=2, idle_timeout_s=60.0)
    with pytest.raises(DuplicateStreamError, match="'cam'.*seqs \\[0, 1\\]"):
        table.step([_input("cam", 0, emb, stats, start=True), _input("cam", 1, emb, stats)], now=0.0)
    assert table.active_streams == () and table.free_rows == 2


def test_idle_streams_are_evicted_and_counted(head, rng):
    emb, stats = _frames(rng, 3)
    table = StreamStateTable(head, capacity=3, idle_timeout_s=10.0)
    table.step([_input("a", 0, emb, stats, start=True), _input("b", 0, emb, stats, start=True)], now=0.0)
    table.step([_input("b", 1, emb, stats)], now=5.0)
    assert table.next_eviction_in(5.0) == pytest.approx(5.0)
    assert table.evict_idle(9.99) == []
    assert table.evict_idle(10.0) == ["a"]
    assert table.active_streams == ("b",) and table.free_rows == 2 and table.evictions == 1
    # Stream a comes back without START: a fresh state, counted as an implicit start.
    out = table.step([_input("a", 1, emb, stats)], now=11.0)[0]
    assert out.implicit_start and table.implicit_starts == 1
    np.testing.assert_allclose(out.probs, _offline(head, emb[1:2], stats[1:2])[0], atol=ATOL, rtol=0)


def test_a_full_table_evicts_the_least_recently_seen_idle_stream(head, rng):
    emb, stats = _frames(rng, 2)
    table = StreamStateTable(head, capacity=2, idle_timeout_s=10.0)
    table.step([_input("old", 0, emb, stats, start=True)], now=0.0)
    table.step([_input("newer", 0, emb, stats, start=True)], now=3.0)
    out = table.step([_input("third", 0, emb, stats, start=True)], now=20.0)
    assert out[0].stream == "third"
    assert set(table.active_streams) == {"newer", "third"}
    assert table.take_evicted() == ["old"] and table.take_evicted() == []
    assert table.evictions == 1


def test_a_full_table_with_no_idle_stream_raises_and_changes_nothing(head, rng):
    emb, stats = _frames(rng, 2)
    table = StreamStateTable(head, capacity=2, idle_timeout_s=10.0)
    table.step([_input("a", 0, emb, stats, start=True), _input("b", 0, emb, stats, start=True)], now=0.0)
    rows = {s: table.row_of(s) for s in ("a", "b")}
    with pytest.raises(StateTableFull, match="capacity 2") as info:
        table.step([_input("a", 1, emb, stats), _input("c", 0, emb, stats, start=True)], now=5.0)
    assert info.value.capacity == 2 and info.value.rejected == ("c",)
    assert {s: table.row_of(s) for s in ("a", "b")} == rows and table.free_rows == 0
    assert table.evictions == 0


def test_inputs_that_do_not_fit_the_head_are_refused(head):
    table = StreamStateTable(head, capacity=1, idle_timeout_s=1.0)
    bad = StepInput("cam", 0, 0.0, embedding=np.zeros(E - 1, np.float32), stats=np.zeros(L, np.float32), start=True)
    with pytest.raises(StepInputError, match="'cam' seq 0"):
        table.step([bad], now=0.0)
    assert table.step([], now=0.0) == []


def test_a_head_in_training_mode_is_refused(head, rng):
    emb, stats = _frames(rng, 1)
    table = StreamStateTable(head, capacity=1, idle_timeout_s=1.0)
    head.train()
    try:
        with pytest.raises(StateTableError, match="training mode"):
            table.step([_input("cam", 0, emb, stats, start=True)], now=0.0)
    finally:
        head.eval()


@pytest.mark.parametrize("capacity, timeout", [(0, 1.0), (2.5, 1.0), (True, 1.0), (2, 0.0), (2, float("inf"))])
def test_parameters_are_validated(head, capacity, timeout):
    with pytest.raises(StateTableConfigError):
        StreamStateTable(head, capacity=capacity, idle_timeout_s=timeout)
