"""Temporal stage: PULL embeddings from every embed worker, put each stream back
in sequence order, step the GRU for many streams at once, emit events and scores.

Per round, at most one frame per stream goes into the batched GRU step (a
stream's next step needs its previous state). START resets a stream, END
flushes and frees it, idle streams are evicted, gaps that outlive the reorder
timeout are skipped and counted as ``reorder_timeout`` drops.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import zmq

from pipeline.events import ActionEventDetector
from pipeline.messages import EmbeddingHeader, Flags, decode_embedding
from pipeline.reorder import Delivered, Gap, Rejected, ReorderBuffer
from pipeline.scores import StepScores
from pipeline.sinks import EventSinks, ScoreSink
from pipeline.state_table import StepInput, StreamStateTable

LATENCY_SAMPLES_KEPT = 20_000


@dataclass(frozen=True)
class TemporalSettings:
    max_batch_size: int
    drain_idle_s: float = 0.3


@dataclass
class StreamTally:
    processed: int = 0
    events: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_t: float | None = None
    last_t: float | None = None
    ended: bool = False
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES_KEPT))

    def summary(self) -> dict:
        lat = np.array(self.latencies) if self.latencies else None
        span = (self.last_t - self.first_t) if self.first_t is not None and self.last_t is not None else 0.0
        return {
            "processed": self.processed,
            "events": self.events,
            "dropped": dict(self.dropped),
            "step_rate_hz": (self.processed - 1) / span if span > 0 else None,
            "latency_p50_s": float(np.percentile(lat, 50)) if lat is not None else None,
            "latency_p99_s": float(np.percentile(lat, 99)) if lat is not None else None,
        }


class TemporalWorker:
    def __init__(
        self,
        settings: TemporalSettings,
        table: StreamStateTable,
        reorder: ReorderBuffer,
        detector: ActionEventDetector,
        embeddings_in: zmq.Socket,
        events: EventSinks,
        scores: ScoreSink,
        classes: tuple[str, ...],
        metrics=None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self._table = table
        self._reorder = reorder
        self._detector = detector
        self._in = embeddings_in
        self._events = events
        self._scores = scores
        self._classes = classes
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._ready: dict[str, deque] = defaultdict(deque)  # in-order items waiting for their step
        self.tallies: dict[str, StreamTally] = defaultdict(StreamTally)

    # -- intake ----------------------------------------------------------------
    def _receive(self, timeout_s: float) -> int:
        if not self._in.poll(int(max(0.0, timeout_s) * 1000)):
            return 0
        got = 0
        while got < 4 * self.s.max_batch_size:
            try:
                parts = self._in.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            header, embedding, stats = decode_embedding(parts)
            self._route(self._reorder.push(header.stream, header.seq, (header, embedding, stats), self._clock()))
            got += 1
        return got

    def _drop(self, stream: str, reason: str, count: int = 1) -> None:
        self.tallies[stream].dropped[reason] += count
        if self._metrics:
            self._metrics.frames_dropped.labels(stream, reason).inc(count)

    def _route(self, released) -> None:
        for item in released:
            if isinstance(item, Delivered):
                self._ready[item.stream].append(item.item)
            elif isinstance(item, Gap):
                self._drop(item.stream, "reorder_timeout", item.count)
            elif isinstance(item, Rejected):
                self._drop(item.stream, "late")

    # -- stepping --------------------------------------------------------------
    def _emit(self, events) -> None:
        for event in events:
            self._events.emit(event)
            self.tallies[event.stream].events += 1
            if self._metrics:
                self._metrics.events.labels(event.stream, event.action, event.kind).inc()

    def _end_stream(self, header: EmbeddingHeader) -> None:
        self._emit(self._detector.end_stream(header.stream, header.t, self._wall()))
        self._reorder.end(header.stream)
        self.tallies[header.stream].ended = True

    def _step_round(self) -> int:
        batch: list[tuple[EmbeddingHeader, np.ndarray, np.ndarray]] = []
        for stream in list(self._ready):
            queue = self._ready[stream]
            while queue and len(batch) < self.s.max_batch_size:
                header, embedding, stats = queue[0]
                if embedding is None:  # END-only marker
                    queue.popleft()
                    self._table.release(header.stream)
                    self._end_stream(header)
                    continue
                batch.append(queue.popleft())
                break
            if not queue:
                del self._ready[stream]
        if not batch:
            return 0
        started = self._wall()
        inputs = [
            StepInput(h.stream, h.seq, h.t, emb, stats, start=bool(h.flags & Flags.START), end=bool(h.flags & Flags.END))
            for h, emb, stats in batch
        ]
        outputs = self._table.step(inputs, self._clock())
        now_wall = self._wall()
        for (header, _, _), out in zip(batch, outputs):
            tally = self.tallies[header.stream]
            if out.implicit_start and self._metrics:
                self._metrics.implicit_starts.labels(header.stream).inc()
            if out.reset:
                self._emit(self._detector.reset(header.stream, header.t, now_wall))
            self._emit(self._detector.update(header.stream, header.t, out.probs, now_wall))
            self._scores.write(StepScores(header.stream, header.t, dict(zip(self._classes, map(float, out.probs)))))
            latency = now_wall - header.capture_wall
            tally.processed += 1
            tally.latencies.append(latency)
            tally.first_t = header.t if tally.first_t is None else tally.first_t
            tally.last_t = header.t
            if self._metrics:
                self._metrics.steps_processed.labels(header.stream).inc()
                self._metrics.end_to_end_latency.labels(header.stream).observe(latency)
            if out.end:
                self._end_stream(header)
        if self._metrics:
            self._metrics.batch_size.labels("temporal").observe(len(batch))
            self._metrics.stage_latency.labels("temporal").observe(now_wall - started)
            self._metrics.active_streams.set(len(self._table.active_streams))
        return len(batch)

    def _housekeeping(self) -> None:
        now = self._clock()
        self._route(self._reorder.expire(now))
        for stream in self._table.evict_idle(now) + self._table.take_evicted():
            if self._metrics:
                self._metrics.evictions.labels(stream).inc()
            self._emit(self._detector.end_stream(stream, self.tallies[stream].last_t or 0.0, self._wall()))
        if self._metrics:
            self._metrics.queue_depth.labels("reorder").set(self._reorder.held())
            self._metrics.active_streams.set(len(self._table.active_streams))

    def run(self, stop, upstream_done) -> dict[str, dict]:
        idle_since: float | None = None
        while not stop.is_set():
            due = self._reorder.next_due_in(self._clock())
            got = self._receive(0.0 if self._ready else (0.05 if due is None else min(due, 0.05)))
            stepped = self._step_round()
            self._housekeeping()
            if upstream_done.is_set():
                if got == 0 and stepped == 0 and not self._ready:
                    now = self._clock()
                    idle_since = idle_since if idle_since is not None else now
                    if now - idle_since >= self.s.drain_idle_s:
                        break
                else:
                    idle_since = None
        # Upstream is gone: release what the reorder window still holds, in order.
        self._route(self._reorder.expire(float("inf")))
        while self._step_round():
            pass
        return {stream: t.summary() for stream, t in self.tallies.items()}
