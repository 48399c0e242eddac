"""What snapshotting stream state costs against the temporal step it rides on (``python -m tools.benchmark_state``).

One process, the shipped head on the CPU at the temporal stage's default of
one thread, every stream live in one state table and one event detector.
A *step round* is what the temporal stage does for every stream once: the
batched GRU steps (at most ``batch`` streams a step) and each stream's
detector update. A *snapshot round* of N streams is what it would do to
save them: one export of their rows, each stream's track, and one file per
stream written through a ``DirectoryStore`` (with and without fsync), or
only encoded (:class:`EncodeOnly`: what stays on the temporal thread when a
writer thread does the file work). The rounds take turns, so drift in the
machine's speed hits them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class EncodeOnly:
    """A store that makes each snapshot's file bytes and keeps none: the cost without the file system."""

    def save(self, snapshot, fsync: bool | None = None) -> None:
        from pipeline.state.snapshot_file import encode

        encode(snapshot)


@dataclass(frozen=True)
class Setup:
    table: object  # StreamStateTable
    detector: object  # ActionEventDetector
    streams: tuple[str, ...]
    step_round: Callable[[], None]
    snapshot_round: Callable[[int, object], None]  # (streams, store)


def build(model: Path, streams: int, batch: int) -> Setup:
    """A table and detector holding ``streams`` streams, each already a few steps in (states not zero)."""
    import torch

    from engines.temporal_head import load_head
    from pipeline.events import ActionEventDetector, HysteresisConfig
    from pipeline.stages.temporal.state_table import StepInput, StreamStateTable
    from pipeline.state.identity import head_identity
    from pipeline.state.snapshot import StreamSnapshot

    torch.set_num_threads(1)
    head, _ = load_head(model)
    cfg = head.config
    table = StreamStateTable(head, capacity=streams, idle_timeout_s=3600.0)
    detector = ActionEventDetector(cfg.classes, HysteresisConfig(on_threshold=0.5, off_threshold=0.3, min_on_steps=2,
                                                                 min_off_steps=2, warmup_steps=2))
    names = tuple(f"cam{i:03d}" for i in range(streams))
    rng = np.random.default_rng(0)
    emb = (rng.random((streams, cfg.backbone.embedding_dim)) * 2).astype(np.float32)
    stats = rng.random((streams, cfg.backbone.stats_dim)).astype(np.float32)
    head_id = head_identity(head)
    clock = {"k": 0}

    def step_round() -> None:
        k = clock["k"]
        clock["k"] += 1
        t = k / cfg.step_rate_hz
        for lo in range(0, streams, batch):
            batch_in = [StepInput(names[i], k, t, emb[i] * (1 + 0.01 * (k % 7)), stats[i], start=k == 0)
                        for i in range(lo, min(lo + batch, streams))]
            for out in table.step(batch_in, now=t):
                detector.update(out.stream, out.t, out.probs, wall_time=t)

    def snapshot_round(count: int, store) -> None:
        chosen = names[:count]
        rows = table.export_streams(chosen)
        now = time.time()
        k = clock["k"]
        for stream in chosen:
            store.save(StreamSnapshot(stream=stream, generation=1, seq=k, t=k / cfg.step_rate_hz, wall_time=now,
                                      head_id=head_id, backbone_id="benchmark", row=rows[stream],
                                      track=detector.export_track(stream)))

    for _ in range(4):
        step_round()
    return Setup(table, detector, names, step_round, snapshot_round)


def timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000.0


def measure(setup: Setup, stores: dict[str, object], counts: tuple[int, ...], rounds: int) -> dict[str, list[float]]:
    """Milliseconds of each round kind in each of ``rounds`` turns: ``step`` and ``<store> x<N>``."""
    times: dict[str, list[float]] = {"step": []}
    for _ in range(rounds):
        times["step"].append(timed(setup.step_round))
        for label, store in stores.items():
            for count in counts:
                times.setdefault(f"{label} x{count}", []).append(timed(lambda: setup.snapshot_round(count, store)))
    return times
