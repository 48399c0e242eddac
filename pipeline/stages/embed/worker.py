"""Embed stage: PULL frames from every capture, batch them across streams, run
the engine, PUSH one embedding message per frame to the temporal stage.

The engine is called as soon as it is free (or once the oldest frame has
waited ``engine.max_wait_ms``, when that is set), with a batch size picked
from what is waiting and what each size has been measured to cost here
(``sizing.py``). END-only markers (no pixels) pass through in their place in
the stream's order. Several embed workers may run;
the temporal stage puts their outputs back in sequence order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zmq

from engines.base import EmbeddingEngine
from pipeline.stages.embed.batching import DynamicBatcher
from pipeline.stages.embed.sizing import BatchSizer
from pipeline.stages.loop import FedBySocket, StageLoop
from pipeline.stages.settings import EmbedSettings
from pipeline.transport.control import Heartbeat
from pipeline.transport.messages import EmbeddingHeader, FrameHeader, MessageError, decode_frame, encode_embedding

logger = logging.getLogger(__name__)


# The largest batch an engine call takes by default. Within it the batch size follows the load (sizing.py);
# on a CPU a big batch is a long call (a frame of it waits for the others: 8 frames of EfficientNet-Lite0 take
# 40 to 160 ms on 2 cores), a GPU wants many frames.
CPU_BATCH = 8
GPU_BATCH = 32


def default_batch_size(engine_name: str) -> int:
    return GPU_BATCH if "cuda" in engine_name or "tensorrt" in engine_name else CPU_BATCH


@dataclass(frozen=True)
class _Pending:
    header: FrameHeader
    pixels: np.ndarray | None
    received: float


@dataclass
class EmbedTally:
    frames: int = 0
    batches: int = 0
    malformed: int = 0


class EmbedWorker(FedBySocket):
    """One embed process's work: frames in, batches through the engine, one embedding message per frame out."""


    def __init__(
        self,
        settings: EmbedSettings,
        engine: EmbeddingEngine,
        frames_in: zmq.Socket,
        embeddings_out: zmq.Socket,
        metrics=None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s = settings
        self._engine = engine
        self._sleep = sleep
        self._in = frames_in
        self._out = embeddings_out
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self.max_batch_size = settings.engine.max_batch_size or default_batch_size(engine.name)
        self._batcher: DynamicBatcher[_Pending] = DynamicBatcher(self.max_batch_size,
                                                                 settings.engine.max_wait_ms / 1000)
        self._sizer = BatchSizer(self.max_batch_size)
        self.tally = EmbedTally()
        self._malformed_logged = 0
        self._paused_until = 0.0

    def _malformed(self, exc: Exception) -> None:
        """A message that is not a frame: count it, say so (not a thousand times), keep serving."""
        self.tally.malformed += 1
        if self._metrics:
            self._metrics.malformed_messages.labels("embed").inc()
        if self._malformed_logged < 5:
            self._malformed_logged += 1
            logger.warning("%s: dropped a malformed message (%s)%s", self.s.stage, exc,
                           "; further ones are only counted" if self._malformed_logged == 5 else "")

    def _receive(self, timeout_s: float) -> int:
        """Take every frame waiting (up to a batch's worth), waiting at most ``timeout_s`` for the first."""
        got = 0
        # Whole milliseconds, rounded up: a wait rounded down to 0 would spin until its deadline.
        if not self._in.poll(math.ceil(max(0.0, timeout_s) * 1000)):
            return 0
        while got < self.max_batch_size:
            try:
                parts = self._in.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                header, pixels = decode_frame(parts)
            except MessageError as exc:
                self._malformed(exc)
                continue
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
            called = self._clock()
            out = self._engine.embed(np.stack([p.pixels for p in with_pixels]))
            embedding, stats = out.embedding, out.stats
            self._measured(len(with_pixels), called)
        done = self._wall()
        if with_pixels and self.s.engine.max_frames_per_s > 0:
            # Throttled: take no new batch before this batch's share of time is over.
            self._paused_until = self._clock() + max(0.0, started + len(with_pixels) / self.s.engine.max_frames_per_s - done)
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
                worker=self.s.worker, generation=h.generation, reason=h.reason, live=h.live,
            )
            self._out.send(encode_embedding(header, emb_row, stats_row))
            if self._metrics:
                self._metrics.stage_latency.labels("embed_queue").observe(max(0.0, started - item.received))
        self.tally.frames += len(batch)
        self.tally.batches += 1
        if self._metrics:
            self._metrics.batch_size.labels("embed").observe(len(with_pixels))
            self._metrics.stage_latency.labels("embed").observe(done - started)

    def _measured(self, size: int, called: float) -> None:
        """Tell the sizer what a call of ``size`` frames cost, and show it."""
        now = self._clock()
        self._sizer.record(size, now - called, now)
        if self._metrics:
            for row in self._sizer.table():
                self._metrics.embed_batch_cost.labels(str(self.s.worker), str(row.size)).set(row.per_frame_s)

    # -- the loop's turns --------------------------------------------------------------------
    def run(self, loop: StageLoop) -> EmbedTally:
        """Serve until told to drain (then process what is in flight and return) or the supervisor is gone."""
        loop.run(self)
        if self._batcher.pending:
            self._process(self._batcher.flush())
        return self.tally

    def handle(self, command: object) -> None:
        logger.warning("%s: ignoring unexpected command %s", self.s.stage, type(command).__name__)

    def work(self, draining: bool) -> bool:
        now = self._clock()
        if now < self._paused_until:
            self._sleep(min(0.05, self._paused_until - now))
            return True
        due = self._batcher.time_until_due(now)
        got = self._receive(0.05 if due is None else min(due, 0.05))
        now = self._clock()
        while self._batcher.ready(now):
            self._process(self._batcher.take(now, self._sizer.choose(self._batcher.pending, now)))
            now = self._clock()
        busy = got > 0 or self._batcher.pending > 0
        if draining and got == 0 and self._batcher.pending:
            self._process(self._batcher.flush())  # upstream is done: what waits for a fuller batch waits for nothing
        return busy

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.s.stage, detail={"frames": self.tally.frames, "batches": self.tally.batches})
