"""Action start/end events from per-step scores: per-stream, per-class hysteresis.

For each stream and each action class (never the background class):

* an inactive class STARTS when its probability is >= ``on_threshold`` for
  ``min_on_steps`` consecutive steps. The event's ``t`` is the time of the
  first of those steps (when the action began, not when we became sure) --
  or, with ``onset_threshold`` set (at most ``on_threshold``), the first step
  of the unbroken run of steps >= ``onset_threshold`` that led up to them: an
  online model's score climbs over a few steps as an action unfolds, and the
  climb, not the crossing, is where the action began. The decision (and so
  ``wall_time``) is not delayed by it. The start's ``confidence`` is the MEAN
  probability over the confirming steps -- the mean, not the max, so a
  single spike inside the run does not inflate it.
* an active class ENDS when its probability is < ``off_threshold`` for
  ``min_off_steps`` consecutive steps; ``t`` is the time of the first step
  below. A dip that stays >= ``off_threshold`` (between the thresholds) does
  not end it. The end's ``confidence`` is the mean probability over the
  action's steps (from its start up to, not including, the closing run): a
  score for the whole segment.
* for ``warmup_steps`` steps after a reset (a START: the GRU state was just
  zeroed and its first outputs are unreliable) nothing counts towards a
  start. A class still high after warm-up starts at the first step after it.

Several classes may be active at once. Within one step, end events come
before start events, each in class order. ``wall_time`` of an event is the
wall-clock time of the update that decided it (so ``wall_time`` minus the
capture time is the detection latency). Pure logic: no clock or I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from pipeline.errors import ActionPipeError, check_whole

EventKind = Literal["start", "end"]
# Why an event happened: "threshold" for the detector's own decisions; an end
# forced by the stream carries the reason of its END or START marker
# (end_of_stream, reconnect, loop, removed, stopped, failed, restart, reset,
# idle, state_lost).
EventReason = str


class EventConfigError(ActionPipeError, ValueError):
    """Hysteresis parameters or class list out of range."""


class EventInputError(ActionPipeError, ValueError):
    """Scores or times handed to the detector that it cannot use."""

    restart_helps = True


class TrackImportError(EventInputError):
    """A stream's exported track that this detector cannot continue (another class list, a bad value)."""

    restart_helps = False


@dataclass(frozen=True, kw_only=True)
class HysteresisConfig:
    on_threshold: float
    off_threshold: float
    min_on_steps: int
    min_off_steps: int = 1
    warmup_steps: int
    onset_threshold: float | None = None  # None: a start's t is the first confirming step

    def __post_init__(self) -> None:
        for name in ("on_threshold", "off_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise EventConfigError(f"{name} must be a finite number, got {value!r}")
        if not 0.0 < self.off_threshold < self.on_threshold <= 1.0:
            raise EventConfigError(
                "thresholds must satisfy 0 < off_threshold < on_threshold <= 1, got "
                f"off_threshold={self.off_threshold}, on_threshold={self.on_threshold}"
            )
        if self.onset_threshold is not None:
            value = self.onset_threshold
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= self.on_threshold:
                raise EventConfigError(
                    f"onset_threshold must be a number in (0, on_threshold={self.on_threshold}], got {value!r}"
                )
        check_whole("min_on_steps", self.min_on_steps, 1, EventConfigError)
        check_whole("min_off_steps", self.min_off_steps, 1, EventConfigError)
        check_whole("warmup_steps", self.warmup_steps, 0, EventConfigError)


def event_id(epoch: str, stream: str, generation: int, seq: int, action: str, kind: str) -> str:
    """An event's stable id: the stream, its generation, the sequence number of the message at which the
    event was decided, the action and the kind, after the ``epoch`` of the temporal process that decided
    it (random, new each time one starts: a restarted pipeline numbers its frames from 0 again, and its
    events must not pass for repeats of the last run's). Message numbers never repeat within a
    generation, and an action starts or ends at most once per message, so the id is unique; it is the
    same each time the event is sent again, which is what lets a receiver drop a repeat (the webhook's
    Idempotency-Key)."""
    return f"{epoch}:{stream}:{generation}:{seq}:{action}:{kind}"


@dataclass(frozen=True)
class ActionEvent:
    stream: str
    action: str
    kind: EventKind
    t: float
    confidence: float
    wall_time: float
    reason: EventReason = "threshold"
    id: str = ""  # event_id(...) once the temporal stage has placed the event in its stream; "" offline

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps`` it for a JSONL sink)."""
        body = {
            "stream": self.stream,
            "action": self.action,
            "kind": self.kind,
            "t": self.t,
            "confidence": self.confidence,
            "wall_time": self.wall_time,
            "reason": self.reason,
        }
        if self.id:
            body["id"] = self.id
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ActionEvent:
        """The event :meth:`to_json` wrote (a spooled event, one from the events socket)."""
        return cls(stream=body["stream"], action=body["action"], kind=body["kind"], t=float(body["t"]),
                   confidence=float(body["confidence"]), wall_time=float(body["wall_time"]),
                   reason=body.get("reason", "threshold"), id=body.get("id", ""))


@dataclass
class _ClassTrack:
    active: bool = False
    # The current run: consecutive steps >= on (while inactive) or < off (while active).
    run_steps: int = 0
    run_sum: float = 0.0
    run_start_t: float = 0.0
    # While inactive: the first step of the unbroken run of steps >= onset_threshold (None: no such run).
    onset_t: float | None = None
    # While active: the sum and count of every step since the start, closing run included.
    segment_sum: float = 0.0
    segment_steps: int = 0

    def clear_run(self) -> None:
        self.run_steps = 0
        self.run_sum = 0.0

    def extend_run(self, t: float, p: float) -> None:
        if self.run_steps == 0:
            self.run_start_t = t
        self.run_steps += 1
        self.run_sum += p

    def segment_mean(self, exclude_run: bool) -> float:
        steps, total = self.segment_steps, self.segment_sum
        if exclude_run:
            steps, total = steps - self.run_steps, total - self.run_sum
        return total / steps if steps > 0 else 0.0


@dataclass
class _StreamTrack:
    classes: list[_ClassTrack]
    steps_since_reset: int = 0
    last_t: float = -math.inf


class ActionEventDetector:
    """Turns each stream's per-step class probabilities into action start/end events."""

    def __init__(self, classes: Sequence[str], config: HysteresisConfig, background: str = "background") -> None:
        classes = tuple(classes)
        if len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
            raise EventConfigError(f"classes must be distinct non-empty names, got {classes!r}")
        self.classes = classes
        self.config = config
        self.background = background
        # Without an onset level a start is dated at its first confirming step: the climb is the run.
        self._onset_threshold = config.on_threshold if config.onset_threshold is None else config.onset_threshold
        self._actions = tuple(i for i, name in enumerate(classes) if name != background)
        if not self._actions:
            raise EventConfigError(f"classes {classes!r} hold no action besides background {background!r}")
        self._streams: dict[str, _StreamTrack] = {}

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self._streams)

    def active_actions(self, stream: str) -> tuple[str, ...]:
        track = self._streams.get(stream)
        if track is None:
            return ()
        return tuple(self.classes[i] for i in self._actions if track.classes[i].active)

    def open_actions(self, stream: str) -> dict[str, float]:
        """The stream's active actions and their confidence so far (what an end event would carry now)."""
        track = self._streams.get(stream)
        if track is None:
            return {}
        return {self.classes[i]: track.classes[i].segment_mean(exclude_run=False)
                for i in self._actions if track.classes[i].active}

    def reset(self, stream: str, t: float, wall_time: float, reason: str = "reset") -> list[ActionEvent]:
        """A START: ends the stream's open actions (with ``reason``) at ``t`` and begins a warm-up."""
        events = self._close(stream, t, wall_time, reason)
        self._streams[stream] = self._new_track()
        return events

    def end_stream(self, stream: str, t: float, wall_time: float, reason: str = "end_of_stream") -> list[ActionEvent]:
        """Ends every open action of ``stream`` at ``t`` (with ``reason``) and forgets it."""
        events = self._close(stream, t, wall_time, reason)
        self._streams.pop(stream, None)
        return events

    def hand_over(self, stream: str) -> None:
        """Forget ``stream`` without ending its actions: it moved to another node, which continues them
        from its snapshot (ending them here would send ends the other node contradicts)."""
        self._streams.pop(stream, None)

    def update(
        self, stream: str, t: float, scores: Mapping[str, float] | np.ndarray, wall_time: float
    ) -> list[ActionEvent]:
        """One step of ``stream`` at stream time ``t``; returns the events it decides.

        A stream seen for the first time is treated as reset (it warms up).
        """
        probs = self._as_probs(scores)
        track = self._streams.get(stream)
        if track is None:
            track = self._streams[stream] = self._new_track()
        if not math.isfinite(t) or t < track.last_t:
            raise EventInputError(
                f"stream {stream!r}: step time must be finite and not go backwards, got {t} after {track.last_t}"
            )
        track.last_t = t
        in_warmup = track.steps_since_reset < self.config.warmup_steps
        track.steps_since_reset += 1

        ends: list[ActionEvent] = []
        starts: list[ActionEvent] = []
        cfg = self.config
        for i in self._actions:
            p = probs[i]
            c = track.classes[i]
            if not c.active:
                # onset <= on, so the climb always covers the confirming run.
                if in_warmup or p < self._onset_threshold:
                    c.onset_t = None
                    c.clear_run()
                    continue
                if c.onset_t is None:
                    c.onset_t = t
                if p < cfg.on_threshold:
                    c.clear_run()
                    continue
                c.extend_run(t, p)
                if c.run_steps >= cfg.min_on_steps:
                    confidence = c.run_sum / c.run_steps
                    starts.append(ActionEvent(stream, self.classes[i], "start", c.onset_t, confidence, wall_time))
                    c.active = True
                    c.segment_sum, c.segment_steps = c.run_sum, c.run_steps
                    c.clear_run()
                continue
            c.segment_sum += p
            c.segment_steps += 1
            if p >= cfg.off_threshold:
                c.clear_run()
                continue
            c.extend_run(t, p)
            if c.run_steps >= cfg.min_off_steps:
                confidence = c.segment_mean(exclude_run=True)
                ends.append(ActionEvent(stream, self.classes[i], "end", c.run_start_t, confidence, wall_time))
                track.classes[i] = _ClassTrack()
        return ends + starts

    # -- snapshots -------------------------------------------------------------
    def export_track(self, stream: str) -> dict[str, Any]:
        """Everything the detector holds for ``stream``, as JSON-able data (``json.dumps`` it, no NaN or
        infinity inside): :meth:`import_track` of it continues the stream's events exactly. A stream the
        detector has not seen exports as a fresh track (it would warm up either way)."""
        track = self._streams.get(stream) or self._new_track()
        return {
            "steps_since_reset": track.steps_since_reset,
            "last_t": track.last_t if math.isfinite(track.last_t) else None,  # -inf: no step yet
            # vars(), not asdict(): the fields are plain values, and asdict's deep copy costs 10x at 100 streams.
            "classes": {self.classes[i]: dict(vars(track.classes[i])) for i in self._actions},
        }

    def import_track(self, stream: str, data: Mapping[str, Any]) -> None:
        """Make ``data`` (from :meth:`export_track`, perhaps of another process) the track of ``stream``;
        :class:`TrackImportError` when it does not fit these classes or holds a bad value."""
        self._streams[stream] = self._track_from(stream, data)

    def align_open_actions(self, stream: str, open_actions: Mapping[str, float]) -> None:
        """Make the stream's open actions exactly ``open_actions`` (action -> confidence so far).

        A restored track is up to a snapshot interval older than the events already sent: an action
        the sent events ended is closed here quietly (its end was sent; a second would be a stray),
        and one they started is opened with that confidence (it stays open, and ends as usual)."""
        track = self._streams.get(stream)
        if track is None:
            return
        for i in self._actions:
            name, c = self.classes[i], track.classes[i]
            if c.active and name not in open_actions:
                track.classes[i] = _ClassTrack()
            elif not c.active and name in open_actions:
                track.classes[i] = _ClassTrack(active=True, segment_sum=float(open_actions[name]), segment_steps=1)

    def shift_times(self, stream: str, delta: float) -> None:
        """Move every time the stream's track holds by ``delta`` seconds: a track restored into a run
        whose stream clock started again (a live stream's time starts at 0 in each run)."""
        track = self._streams.get(stream)
        if track is None or not math.isfinite(delta):
            return
        track.last_t += delta  # -inf (no step yet) stays -inf
        for c in track.classes:
            c.run_start_t += delta
            if c.onset_t is not None:
                c.onset_t += delta

    # -- internals -------------------------------------------------------------
    def _track_from(self, stream: str, data: Mapping[str, Any]) -> _StreamTrack:
        def bad(why: str) -> TrackImportError:
            return TrackImportError(f"stream {stream!r}: its exported event track {why}")

        if not isinstance(data, Mapping) or set(data) != {"steps_since_reset", "last_t", "classes"}:
            raise bad(f"must hold steps_since_reset, last_t and classes, got {sorted(data) if isinstance(data, Mapping) else data!r}")
        actions = {self.classes[i] for i in self._actions}
        classes = data["classes"]
        if not isinstance(classes, Mapping) or set(classes) != actions:
            raise bad(f"is for classes {sorted(classes) if isinstance(classes, Mapping) else classes!r}, "
                      f"this detector's actions are {sorted(actions)}")
        track = self._new_track()
        track.steps_since_reset = _whole(data["steps_since_reset"], "steps_since_reset", bad)
        track.last_t = -math.inf if data["last_t"] is None else _finite(data["last_t"], "last_t", bad)
        names = {f.name for f in fields(_ClassTrack)}
        for i in self._actions:
            values = classes[self.classes[i]]
            if not isinstance(values, Mapping) or set(values) != names:
                raise bad(f"class {self.classes[i]!r} must hold {sorted(names)}")
            if not isinstance(values["active"], bool):
                raise bad(f"class {self.classes[i]!r}: active must be true or false, got {values['active']!r}")
            track.classes[i] = _ClassTrack(
                active=values["active"],
                run_steps=_whole(values["run_steps"], "run_steps", bad),
                run_sum=_finite(values["run_sum"], "run_sum", bad),
                run_start_t=_finite(values["run_start_t"], "run_start_t", bad),
                onset_t=None if values["onset_t"] is None else _finite(values["onset_t"], "onset_t", bad),
                segment_sum=_finite(values["segment_sum"], "segment_sum", bad),
                segment_steps=_whole(values["segment_steps"], "segment_steps", bad),
            )
        return track

    def _new_track(self) -> _StreamTrack:
        return _StreamTrack(classes=[_ClassTrack() for _ in self.classes])

    def _close(self, stream: str, t: float, wall_time: float, reason: EventReason) -> list[ActionEvent]:
        track = self._streams.get(stream)
        if track is None:
            return []
        events = []
        for i in self._actions:
            c = track.classes[i]
            if c.active:
                # The closing run never completed, so its steps still belong to the action.
                events.append(
                    ActionEvent(stream, self.classes[i], "end", t, c.segment_mean(exclude_run=False), wall_time, reason)
                )
        return events

    def _as_probs(self, scores: Mapping[str, float] | np.ndarray) -> list[float]:
        """The scores in class order, as Python floats: indexing an array costs a scalar object per class,
        and NumPy's checks cost more than the list's on seven values (this runs at every step of every stream)."""
        if isinstance(scores, Mapping):
            missing = [c for c in self.classes if c not in scores]
            if missing:
                raise EventInputError(f"scores lack class(es) {missing}; expected {list(self.classes)}")
            probs = [float(scores[c]) for c in self.classes]
        else:
            shape = scores.shape if isinstance(scores, np.ndarray) else np.shape(scores)
            if shape != (len(self.classes),):
                raise EventInputError(
                    f"scores array must have shape ({len(self.classes)},) in class order {list(self.classes)}, "
                    f"got {shape}"
                )
            if isinstance(scores, np.ndarray) and scores.dtype.kind == "f":
                probs = scores.tolist()
            else:
                try:
                    probs = [float(p) for p in scores]
                except (TypeError, ValueError) as exc:
                    raise EventInputError(f"scores must be numbers, got {scores!r}") from exc
        if not all(map(math.isfinite, probs)):
            raise EventInputError(f"scores must be finite, got {probs}")
        return probs


def _whole(value: Any, name: str, bad) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _finite(value: Any, name: str, bad) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(f"{name} must be a finite number, got {value!r}")
    return float(value)
