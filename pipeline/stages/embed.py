"""Embed stage: PULL frames from every capture, batch them across streams, run
the engine, PUSH one embedding message per frame to the temporal stage.

A batch leaves when it is full or when its oldest frame has waited the
configured maximum (``DynamicBatcher``). END-only markers (no pixels) pass
through in their place in the stream's order. Several embed workers may run;
the temporal stage puts their outputs back in sequence order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq

from engines.base import EmbeddingEngine
from pipeline.batching import DynamicBatcher
from pipeline.messages import EmbeddingHeader, FrameHeader, decode_frame, encode_embedding


@dataclass(frozen=True)
class EmbedSettings:
    worker: int
    max_batch_size: int
    max_wait_s: float
    drain_idle_s: float = 0.3


@dataclass(frozen=True)
class _Pending:
    header: FrameHeader
    pixels: np.ndarray | None
    received: float


@dataclass
class EmbedTally:
    frames: int = 0
    batches: int = 0


class EmbedWorker:
    def __init__(
        self,
        settings: EmbedSettings,
        engine: EmbeddingEngine,
        frames_in: zmq.Socket,
        embeddings_out: zmq.Socket,
        metrics=None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self._engine = engine
        self._in = frames_in
        self._out = embeddings_out
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._batcher: DynamicBatcher[_Pending] = DynamicBatcher(settings.max_batch_size, settings.max_wait_s)
        self.tally = EmbedTally()

    def _receive(self, timeout_s: float) -> int:
        """Take every frame waiting (up to a batch's worth), waiting at most ``timeout_s`` for the first."""
        got = 0
        if not self._in.poll(int(max(0.0, timeout_s) * 1000)):
            return 0
        while got < self.s.max_batch_size:
            try:
                parts = self._in.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            header, pixels = decode_frame(parts)
            # Copy out of the ZeroMQ buffer now: it is stacked into a batch anyway.
            item = _Pending(header, None if pixels is None else np.array(pixels), self._wall())
            self._batcher.add(item, self._clock())
            got += 1
        if self._metrics:
            self._metrics.queue_depth.labels("embed").set(self._batcher.pending)
        return got

    def _process(self, batch: list[_Pending]) -> None:
        with_pixels = [p for p in batch if p.pixels is not None]
        embedding = stats = None
        started = self._wall()
        if with_pixels:
            out = self._engine.embed(np.stack([p.pixels for p in with_pixels]))
            embedding, stats = out.embedding, out.stats
        done = self._wall()
        row = 0
        for item in batch:
            h = item.header
            emb_row = stats_row = None
            if item.pixels is not None:
                emb_row, stats_row = embedding[row], stats[row]
                row += 1
            header = EmbeddingHeader(
                stream=h.stream, seq=h.seq, t=h.t, capture_wall=h.capture_wall, flags=h.flags, embed_wall=done,
                embedding_dim=0 if emb_row is None else emb_row.size, stats_dim=0 if stats_row is None else stats_row.size,
                worker=self.s.worker,
            )
            self._out.send_multipart(encode_embedding(header, emb_row, stats_row))
            if self._metrics:
                self._metrics.stage_latency.labels("embed_queue").observe(max(0.0, started - item.received))
        self.tally.frames += len(batch)
        self.tally.batches += 1
        if self._metrics:
            self._metrics.batch_size.labels("embed").observe(len(with_pixels))
            self._metrics.stage_latency.labels("embed").observe(done - started)

    def run(self, stop, upstream_done) -> EmbedTally:
        """Serve until ``stop``; after ``upstream_done``, drain what is in flight, then return."""
        idle_since: float | None = None
        while not stop.is_set():
            now = self._clock()
            due = self._batcher.time_until_due(now)
            got = self._receive(0.05 if due is None else min(due, 0.05))
            now = self._clock()
            while self._batcher.ready(now):
                self._process(self._batcher.take(now))
            if upstream_done.is_set():
                if got == 0 and self._batcher.pending == 0:
                    idle_since = idle_since if idle_since is not None else now
                    if now - idle_since >= self.s.drain_idle_s:
                        break
                else:
                    idle_since = None
                    if got == 0 and self._batcher.pending:
                        self._process(self._batcher.flush())
        if self._batcher.pending:
            self._process(self._batcher.flush())
        return self.tally
