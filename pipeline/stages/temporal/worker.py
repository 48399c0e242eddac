"""Temporal stage: PULL embeddings from every embed worker, put each stream back
in sequence order, step the GRU for many streams at once, emit events and scores.

Per round, at most one frame per stream goes into the batched GRU step (a
stream's next step needs its previous state). A round takes every ready
stream together: it waits up to ``temporal.round_wait_ms`` after its first
stream is ready for the others (``rounds.py``), since a GRU call costs about
as much for one stream as for a dozen. START resets a stream and END
flushes and frees it; both carry a reason (open, reconnect, loop, removed,
stopped, restart, ...) that the events closed by them carry too. Idle
streams are evicted; gaps that outlive the reorder timeout are skipped and
counted as ``reorder_timeout`` drops; gaps left by an embed worker that died
are given up sooner, as ``stage_crash`` drops (``upstream.py`` says when).

Generations: the supervisor bumps a stream's generation each time it gives the stream to a (new) capture
process, and sequence numbers restart with each generation. Frames of an older generation still in flight are
counted ``late``; what the reorder window held of the older generation is flushed in order when the newer one
appears. After a capture restart, a replay resumes where it was last reported, so the first few frames of the
new generation may repeat steps already scored: they are dropped (``stage_crash``) rather than scored twice.

Durable state (``snapshots.py``, ``restoring.py``): about once a second the streams that stepped are
snapshotted, and at a drained stop every stream's last state. A restarted temporal worker (its predecessor
died, and with it every stream's GRU state) continues each stream from its snapshot when one is usable, its
open actions still open; the others' actions it closes as its predecessor reported them (it reports them
whenever they change; reason ``restart``), and those streams start new sequences (counted as ``state_lost``).
A replay it restores is read again from its snapshot's step (``rewind.py``): the supervisor has its capture
send it in a new generation whose START (reason ``rewind``) continues the restored state. A live stream that a
new run opens continues from the previous run's snapshot in ``state.dir``. In a cluster, a stream leaving this
node ends with reason ``moved`` (snapshotted there, its actions left open, the supervisor told once the
snapshot is written), and one arriving from another node is put back from its snapshot before its first frame
(``ResumeStream``), its events named as the node it comes from named them. The durable-state methods are in
``durable.py``.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import zmq

from pipeline.events import ActionEvent, ActionEventDetector, event_id
from pipeline.outputs.sinks import SinkFanOut
from pipeline.scores import StepScores
from pipeline.stages.loop import FedBySocket, LoopEnd, StageLoop
from pipeline.stages.settings import TemporalSettings
from pipeline.stages.temporal.durable import DurableStreams, StreamPosition
from pipeline.stages.temporal.reorder import Delivered, Gap, Rejected, ReorderBuffer
from pipeline.stages.temporal.restoring import StreamRestorer, gap_line
from pipeline.stages.temporal.rounds import RoundPolicy
from pipeline.stages.temporal.snapshots import StreamSnapshots
from pipeline.stages.temporal.state_table import StateTableFull, StepInput, StreamStateTable
from pipeline.stages.temporal.tally import StreamTally
from pipeline.stages.temporal.upstream import LostUpstream
from pipeline.transport.control import Heartbeat, ResumeStream, UpstreamLost
from pipeline.transport.messages import (
    END_FLAG,
    FINAL_END_REASONS,
    START_FLAG,
    EmbeddingHeader,
    Flags,
    MessageError,
    decode_embedding,
)

logger = logging.getLogger(__name__)

# After an embed worker died: frames still on their way from the others get this long.
UPSTREAM_LOST_GRACE_S = 0.5
# Timeouts (a reorder gap, an idle stream, a dead embed worker's frames) are seconds long: they are
# looked at this often, not at every message.
HOUSEKEEPING_S = 0.1
# Messages taken per turn, per stream a step can hold: enough to fill a step, bounded so stepping is not starved.
RECEIVE_PER_TURN_FACTOR = 4


class TemporalWorker(DurableStreams, FedBySocket):
    """The temporal process's work: embeddings in, back in order per stream, batched GRU steps, events and scores out."""

    def __init__(
        self,
        settings: TemporalSettings,
        table: StreamStateTable,
        reorder: ReorderBuffer,
        detector: ActionEventDetector,
        embeddings_in: zmq.Socket,
        events: SinkFanOut,
        scores: SinkFanOut | None,
        classes: tuple[str, ...],
        metrics=None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        live_reorder: ReorderBuffer | None = None,
        epoch: str | None = None,
        snapshots: StreamSnapshots | None = None,
        restorer: StreamRestorer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s = settings
        self.epoch = epoch or settings.event_epoch or secrets.token_hex(4)  # the first part of every event id
        self._table = table
        self._replay_reorder = reorder
        self._live_reorder = live_reorder or reorder
        self._detector = detector
        self._in = embeddings_in
        self._poller = zmq.Poller()  # one for the worker's life: Socket.poll builds one per call
        self._poller.register(embeddings_in, zmq.POLLIN)
        self._events = events
        self._scores = scores
        self._classes = classes
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._ready: dict[str, deque] = defaultdict(deque)  # in-order items waiting for their step
        self._rounds = RoundPolicy(settings.temporal.round_wait_ms / 1000, settings.temporal.max_batch_size)
        self._next_housekeeping = 0.0
        self._positions: dict[str, StreamPosition] = {}
        self._upstream = LostUpstream(UPSTREAM_LOST_GRACE_S)
        self._malformed_logged = 0
        self._report: Callable[[object], None] | None = None  # the supervisor's ear, once running
        self._actions_changed = False
        self._snapshots = snapshots
        if snapshots is not None:
            snapshots.epoch = self.epoch  # each snapshot says how its step's events are named
        self._restorer = restorer if settings.state.restore else None
        self._rewinds_to_ask: list = []  # StreamRestored for the supervisor, once running
        self.tallies: dict[str, StreamTally] = defaultdict(StreamTally)
        self._step_metrics: dict[str, tuple] = {}  # a stream's steps counter and latency histogram

    # -- intake ----------------------------------------------------------------
    def _receive(self, timeout_s: float) -> int:
        # Whole milliseconds, rounded up: a wait rounded down to 0 would spin until its deadline. No poll
        # at all when not waiting: the first receive says as much, for less (a poll costs a message's worth).
        if timeout_s > 0 and not self._poller.poll(math.ceil(timeout_s * 1000)):
            return 0
        got = 0
        while got < RECEIVE_PER_TURN_FACTOR * self.s.temporal.max_batch_size:
            try:
                data = self._in.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            got += 1
            if self._in.get(zmq.RCVMORE):  # an embedding is one part: this is something else, counted once
                parts = 1 + len(self._in.recv_multipart(zmq.NOBLOCK))
                self._malformed(MessageError(f"a message of {parts} parts (an embedding is one)"))
                continue
            try:
                header, embedding, stats = decode_embedding(data)
            except MessageError as exc:
                self._malformed(exc)
                continue
            self._accept(header, embedding, stats)
        return got

    def _malformed(self, exc: Exception) -> None:
        if self._metrics:
            self._metrics.malformed_messages.labels("temporal").inc()
        if self._malformed_logged < 5:
            self._malformed_logged += 1
            logger.warning("temporal: dropped a malformed message (%s)%s", exc,
                           "; further ones are only counted" if self._malformed_logged == 5 else "")

    def _reorder_for(self, header: EmbeddingHeader) -> ReorderBuffer:
        return self._live_reorder if header.live else self._replay_reorder

    def _accept(self, header: EmbeddingHeader, embedding, stats) -> None:
        stream = header.stream
        position = self._positions.get(stream)
        if position is not None and header.generation < position.generation:
            if embedding is not None:  # a frame of a capture process that was replaced
                self._drop(stream, "late")
            return
        rewind = position.rewind if position is not None else None
        if rewind is not None and rewind.waiting(header.generation):
            if embedding is not None:  # stepped after the snapshot by the dead worker: the rewind reads it again
                self._drop(stream, "stage_crash")
                return
            logger.warning("temporal: stream %s: its sequence ended (%s) before its rewind came: its steps after "
                           "the snapshot are lost", stream, header.reason)
            position.rewind = rewind = None
        key = (stream, header.generation)
        reorder = self._reorder_for(header)
        if position is None or header.generation > position.generation:
            if position is not None:
                old_key = (stream, position.generation)
                self._route(self._live_reorder.flush(old_key) + self._replay_reorder.flush(old_key))
                self._upstream.forget(old_key)
                position.generation = header.generation
                if header.flags & Flags.START and header.reason == "restart" and position.last_t is not None:
                    position.repeat_until_t = position.last_t
                if rewind is not None and rewind.begins(header.generation, bool(header.flags & Flags.START),
                                                        header.reason):
                    # Read again from the snapshot's step: the restored state continues, no reset.
                    header = replace(header, flags=Flags(header.flags) & ~Flags.START)
                    position.resumed = None
                    logger.info("temporal: stream %s: rewound: its capture reads it again after t=%.3f s; steps up to "
                                "t=%s s are stepped without output", stream, rewind.t, rewind.written.last_step_t)
                elif position.resumed is not None:  # a new capture process: its START resets what was restored
                    position.rewind = None
                    logger.info("temporal: stream %s: a new generation starts; its restored state is reset", stream)
                    position.resumed = None
            else:
                position = self._positions[stream] = StreamPosition(header.generation)
            if self.s.known_generations.get(stream) == header.generation:
                # The predecessor was mid-way through this generation: take the numbering as it comes.
                reorder.start(key, header.seq)
        elif position.moved_in is not None and header.flags & Flags.START:
            # Arrived from another node and restored: its first frame continues the snapshot, no reset.
            header = replace(header, flags=Flags(header.flags) & ~Flags.START)
            logger.info("temporal: stream %s: continues here from t=%.3f s (its snapshot's step) at t=%.3f s",
                        stream, position.moved_in.t, header.t)
            position.moved_in = None
        elif position.resumed is not None:
            # Restored after a crash: the stream goes on from whichever of its frames comes first.
            reorder.start(key, header.seq)
            logger.warning("temporal: %s", gap_line(position.resumed, header.seq, header.t))
            position.resumed = None
        now = self._clock()
        self._route(reorder.push(key, header.seq, (header, embedding, stats), now))
        if self._upstream.successor_frame(key, header.worker, now):
            # Whatever the stream still misses below this frame died with the worker this one replaced.
            self._give_up(reorder.give_up_before(key, header.seq), f"embed worker {header.worker} died")

    def _drop(self, stream: str, reason: str, count: int = 1) -> None:
        self.tallies[stream].dropped[reason] += count
        if self._metrics:
            self._metrics.frames_dropped.labels(stream, reason).inc(count)

    def _route(self, released) -> None:
        for item in released:
            stream = item.stream[0]
            if isinstance(item, Delivered):
                self._deliver(stream, item.item)
            elif isinstance(item, Gap):
                self._drop(stream, "reorder_timeout" if item.reason in ("timeout", "window") else "stage_crash",
                           item.count)
            elif isinstance(item, Rejected) and item.reason != "skipped" and item.item[1] is not None:
                self._drop(stream, "late")

    def _give_up(self, released: list, why: str) -> None:
        """Route what giving gaps up released, and say which frames were lost."""
        for gap in (r for r in released if isinstance(r, Gap)):
            logger.warning("temporal: stream %s: frames %d to %d given up (%s)", gap.stream[0], gap.first_missing_seq,
                           gap.first_missing_seq + gap.count - 1, why)
        self._route(released)

    def _deliver(self, stream: str, item) -> None:
        header, embedding, _ = item
        position = self._positions[stream]
        if embedding is not None and position.repeat_until_t is not None:
            if header.t <= position.repeat_until_t:
                if header.flags & START_FLAG:
                    position.carry_start = header.reason
                self._drop(stream, "stage_crash")
                return
            position.repeat_until_t = None
        if embedding is not None and position.carry_start is not None and not header.flags & START_FLAG:
            item = (replace(header, flags=header.flags | START_FLAG, reason=position.carry_start), *item[1:])
        if embedding is not None:
            position.carry_start = None
        self._ready[stream].append(item)
        self._rounds.ready(self._clock())

    # -- stepping --------------------------------------------------------------
    def _emit(self, events: list[ActionEvent], generation: int, seq: int) -> None:
        """Hand ``events``, decided at message ``seq`` of the stream's ``generation``, to the outputs."""
        for event in events:
            position = self._positions.get(event.stream)
            # A rewind's messages are named as those of the generation it reads again, a stream from another
            # node's as that node named them: an event decided again keeps its id.
            name = position.event_name(self.epoch, generation, seq) if position else (self.epoch, generation, seq)
            event = replace(event, id=event_id(name[0], event.stream, name[1], name[2], event.action, event.kind))
            self._actions_changed = True
            self._events.emit(event)
            self.tallies[event.stream].events += 1
            if self._metrics:
                self._metrics.events.labels(event.stream, event.action, event.kind).inc()

    def _end_stream(self, header: EmbeddingHeader, snapshotted: bool = False) -> None:
        reason = header.reason or "end_of_stream"
        if reason == "moved":
            self._hand_over(header, snapshotted)
        else:
            self._emit(self._detector.end_stream(header.stream, header.t, self._wall(), reason), header.generation,
                       header.seq)
        if reason in FINAL_END_REASONS:
            key = (header.stream, header.generation)
            self._route(self._reorder_for(header).end(key))
            self._upstream.forget(key)
            self.tallies[header.stream].ended = True

    def _step_round(self) -> int:
        batch: list[tuple[EmbeddingHeader, np.ndarray, np.ndarray]] = []
        for stream in list(self._ready):
            queue = self._ready[stream]
            while queue and len(batch) < self.s.temporal.max_batch_size:
                header, embedding, stats = queue[0]
                if embedding is None:  # END-only marker
                    queue.popleft()
                    snapshotted = self._last_snapshot(header)
                    self._table.release(header.stream)
                    self._end_stream(header, snapshotted)
                    continue
                batch.append(queue.popleft())
                break
            if not queue:
                del self._ready[stream]
        if not batch:
            return 0
        started = self._wall()
        if self._restorer is not None:
            batch = [self._continue_previous_run(item) for item in batch]
        # end=False: an END's row is freed after its step by _after_step, once its last snapshot is taken.
        inputs = [StepInput(h.stream, h.seq, h.t, emb, stats, start=bool(h.flags & START_FLAG))
                  for h, emb, stats in batch]
        try:
            outputs = self._table.step(inputs, self._clock())
        except StateTableFull as exc:
            # New streams wait for a row; the rest of the batch is not held up by them.
            waiting = set(exc.rejected)
            for h, emb, stats in reversed([b for b in batch if b[0].stream in waiting]):
                self._ready[h.stream].appendleft((h, emb, stats))
            batch = [b for b in batch if b[0].stream not in waiting]
            inputs = [x for x in inputs if x.stream not in waiting]
            logger.warning("temporal: %s", exc)
            outputs = self._table.step(inputs, self._clock()) if inputs else []
        now_wall = self._wall()
        for (header, _, _), out in zip(batch, outputs, strict=True):
            self._after_step(header, out, now_wall)
        if self._metrics:
            self._metrics.batch_size.labels("temporal").observe(len(batch))
            self._metrics.stage_latency.labels("temporal").observe(now_wall - started)
            self._metrics.active_streams.set(len(self._table.active_streams))
        self._report_open_actions()
        return len(batch)

    def _report_open_actions(self) -> None:
        """Tell the supervisor at once when the open actions change: if this process dies, its
        successor ends exactly those (a periodic report would miss the ones started since)."""
        if self._actions_changed and self._report is not None:
            self._report(self.heartbeat())
            self._actions_changed = False

    def _after_step(self, header: EmbeddingHeader, out, now_wall: float) -> None:
        stream = header.stream
        tally = self.tallies[stream]
        if out.reset:
            if out.implicit_start:
                reason = "state_lost" if self.s.restarted else "implicit"
                if self._metrics:
                    self._metrics.implicit_starts.labels(stream).inc()
            else:
                reason = header.reason or "open"
            if self._metrics:
                self._metrics.sequences_started.labels(stream, reason).inc()
                self._metrics.state_origin.labels(stream).set(0)  # a new sequence: its state starts fresh
            events = self._detector.reset(stream, header.t, now_wall, reason)
        else:
            events = []
        events += self._detector.update(stream, header.t, out.probs, now_wall)
        rewind = self._positions[stream].rewind
        quiet = rewind is not None and rewind.quiet(header.generation, header.t)  # output by the dead worker
        if rewind is not None:
            events = [] if quiet else rewind.fresh(header.generation, events)
        self._emit(events, header.generation, header.seq)
        latency = now_wall - header.capture_wall
        if self._scores is not None and not quiet:
            self._scores.emit(StepScores(stream, header.t, dict(zip(self._classes, map(float, out.probs))), now_wall,
                                         latency))
        tally.processed += 1
        tally.latencies.append(latency)
        tally.first_t = header.t if tally.first_t is None else tally.first_t
        tally.last_t = header.t
        tally.first_wall = now_wall if tally.first_wall is None else tally.first_wall
        tally.last_wall = now_wall
        self._positions[stream].last_t = header.t
        self._positions[stream].last_seq = header.seq
        if self._metrics:
            steps, latencies = self._step_metrics.get(stream) or self._step_metrics_of(stream)
            steps.inc()
            latencies.observe(latency)
        if self._snapshots is not None:
            self._snapshots.stepped(stream)
            if header.flags & START_FLAG or header.seq == 0:
                # A new sequence (or one continued from the last run) replaces the stream's old snapshot at
                # once, not a second later: a crash meanwhile must not restore a sequence that is over.
                self._snapshots.take([stream], self._table, self._detector, self._position_of)
        if header.flags & END_FLAG:
            snapshotted = self._last_snapshot(header)
            self._table.release(stream)
            self._end_stream(header, snapshotted)

    def _step_metrics_of(self, stream: str) -> tuple:
        # Kept per stream: looking a labelled child up costs as much as updating it, at every step.
        children = (self._metrics.steps_processed.labels(stream), self._metrics.end_to_end_latency.labels(stream))
        self._step_metrics[stream] = children
        return children

    def _housekeeping(self) -> None:
        now = self._clock()
        self._route(self._live_reorder.expire(now))
        if self._replay_reorder is not self._live_reorder:
            self._route(self._replay_reorder.expire(now))
        if self._upstream.sweep_due(now):
            released = self._live_reorder.skip_all_gaps("lost")
            if self._replay_reorder is not self._live_reorder:
                released += self._replay_reorder.skip_all_gaps("lost")
            self._give_up(released, "an embed worker died")
        for stream in self._table.evict_idle(now) + self._table.take_evicted():
            if self._metrics:
                self._metrics.evictions.labels(stream).inc()
            position = self._positions.get(stream) or StreamPosition(0)
            self._emit(self._detector.end_stream(stream, self.tallies[stream].last_t or 0.0, self._wall(), "idle"),
                       position.generation, position.last_seq)
        if self._metrics:
            self._metrics.queue_depth.labels("reorder").set(self._live_reorder.held() + (
                self._replay_reorder.held() if self._replay_reorder is not self._live_reorder else 0))
            self._metrics.active_streams.set(len(self._table.active_streams))

    def heartbeat(self) -> Heartbeat:
        streams = {}
        for stream in self._detector.streams:
            actions = self._detector.open_actions(stream)
            if actions:
                position = self._positions.get(stream)
                streams[stream] = {"t": position.last_t if position else None, "actions": actions,
                                   "generation": position.generation if position else 0,
                                   "seq": position.last_seq if position else -1}
        return Heartbeat(self.s.stage, streams, {"active_streams": len(self._table.active_streams),
                                                 "failing_outputs": self._events.failing + (
                                                     self._scores.failing if self._scores else [])})

    # -- the loop's turns ------------------------------------------------------------------------
    def run(self, loop: StageLoop, report: Callable[[object], None] | None = None) -> dict[str, dict]:
        """Serve until drained or orphaned; ``report`` tells the supervisor at once when open actions change."""
        self._report = report
        self.close_orphaned_actions(self.restore_after_crash())
        self._report_open_actions()
        for message in self._rewinds_to_ask:  # the supervisor has the replays read again from there
            if report is not None:
                report(message)
        if loop.run(self) is LoopEnd.ORPHANED:
            # The supervisor is gone, and with it (in a cluster) maybe the right to these streams: another node
            # may be continuing them from their snapshots now. Nothing more is stepped or written.
            if self._snapshots is not None:
                self._snapshots.abandon()
            return {stream: t.summary() for stream, t in self.tallies.items()}
        # Upstream is gone: release what the reorder windows still hold, in order.
        self._route(self._live_reorder.expire(float("inf")))
        self._route(self._replay_reorder.expire(float("inf")))
        while self._step_round():
            pass
        if self._snapshots is not None:
            self._snapshots.close(self._table, self._detector, self._position_of)
        return {stream: t.summary() for stream, t in self.tallies.items()}

    def handle(self, command: object) -> None:
        if isinstance(command, ResumeStream):
            answer = self.resume_stream(command)
            if self._report is not None:
                self._report(answer)
        elif isinstance(command, UpstreamLost):
            logger.warning("temporal: %s died; frames it held are given up after %.1f s, or when its successor's "
                           "first frame of their stream arrives", command.worker, UPSTREAM_LOST_GRACE_S)
            self._upstream.lost(command.index, self._clock())
        else:
            logger.warning("temporal: ignoring unexpected command %s", type(command).__name__)

    def work(self, draining: bool) -> bool:
        now = self._clock()
        active = len(self._table.active_streams)
        round_due = self._rounds.due_in(len(self._ready), active, now)
        wait = min(0.05, max(0.0, self._next_housekeeping - now))
        if round_due and not draining:
            # A round is open: what arrives meanwhile is taken in one gulp when it is due. Waking for each
            # message as it came cost more CPU than the messages themselves (a wake-up per frame).
            self._sleep(min(wait, round_due))
            got = self._receive(0.0)
        else:
            got = self._receive(wait if round_due is None else min(wait, round_due))
        stepped = 0
        now = self._clock()
        if draining or self._rounds.due_in(len(self._ready), active, now) == 0.0:
            stepped = self._step_round()
            self._rounds.stepped(len(self._ready), now)
        if now >= self._next_housekeeping:
            self._housekeeping()
            self._next_housekeeping = now + HOUSEKEEPING_S
        if self._snapshots is not None:
            self._snapshots.tick(self._clock(), self._table, self._detector, self._position_of)
        return bool(got or stepped or self._ready)
