"""The control channel between the supervisor and its stage processes.

The supervisor binds a ZeroMQ ROUTER socket; every stage process connects a
DEALER whose identity is its stage name (``capture:0``, ``embed:1``,
``temporal``). Messages are small JSON objects, one typed frozen dataclass
each. The supervisor tells (add and remove streams, stop reading, drain);
stages report (hello, stream state changes, heartbeats, their result). A
stage killed mid-message takes nothing else down with it, which a lock
shared between processes cannot promise.

Stream URIs travel here, over the run's private ipc socket, never on a
command line where ``ps`` would show their passwords.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import zmq

from pipeline.errors import ActionPipeError


class ControlMessageError(ActionPipeError, ValueError):
    """A control message that does not follow the protocol."""

    restart_helps = True


# -- supervisor -> stage -----------------------------------------------------
@dataclass(frozen=True)
class AddStream:
    """Capture: start serving a stream."""

    stream: str
    uri: str = field(repr=False)  # may hold credentials
    live: bool
    realtime: bool
    loop: bool
    generation: int
    open_timeout_s: float
    stale_after_s: float
    buffer_frames: int
    reconnect: dict[str, Any]  # Backoff fields and max_attempts
    image_fps: float | None = None
    # After a capture process restart: a replay skips what was sent up to this stream time...
    resume_after_t: float | None = None
    # ...and a live stream's time continues from here instead of 0.
    start_t: float | None = None
    start_reason: str = "open"
    rtsp_transport: str = "auto"  # rtsp:// sources: tcp, udp, http, or auto (TCP, then UDP if TCP is refused)
    speed: float = 1.0  # paced recordings: multiple of their own rate


@dataclass(frozen=True)
class RemoveStream:
    """Capture: end the stream's sequence (END, with ``reason``) and forget it. ``moved``: the stream
    goes on on another node, from the snapshot its END makes the temporal stage take."""

    stream: str
    reason: str = "removed"


@dataclass(frozen=True)
class StopReading:
    """Capture: stop every source, send what was read and each stream's END, then exit."""


@dataclass(frozen=True)
class Drain:
    """Embed and temporal: upstream has finished; process what is in flight, then exit."""


@dataclass(frozen=True)
class Release:
    """Any stage that said StageDone: every stage downstream has finished, so what this one sent has been
    read; close the data sockets and exit. Until then a finished stage holds them open: ZeroMQ's LINGER
    waits for what the sender still queues, not for what sits in the kernel's socket buffer unread, and a
    receiver that is behind drops that when its sender closes (zeromq/libzmq#4660)."""


@dataclass(frozen=True)
class UpstreamLost:
    """Temporal: an embed worker died; frames it held are gone, so stop waiting for them."""

    worker: str  # its stage name, for the logs
    index: int  # what its embeddings (and its successor's) carry as ``worker``


@dataclass(frozen=True)
class ResumeStream:
    """Temporal: a stream arrives from another node (``origin`` ``failover`` or ``move``) in ``generation``:
    put its snapshot back now, before its first frame, and say so (``ResumeReady``). ``open_actions``: what
    the node it comes from last reported open (action -> confidence); ``last_t``: its last step there."""

    stream: str
    generation: int
    origin: str
    open_actions: dict[str, float] = field(default_factory=dict)
    last_t: float | None = None


# -- stage -> supervisor -----------------------------------------------------
@dataclass(frozen=True)
class Hello:
    stage: str
    pid: int


@dataclass(frozen=True)
class StreamChanged:
    """A stream moved to another state (capture owns each stream's state machine)."""

    stream: str
    generation: int
    state: str
    reason: str
    retry_in_s: float | None = None  # when the next attempt is due (reconnecting)
    error: str = ""  # what went wrong, when something did


@dataclass(frozen=True)
class Heartbeat:
    """Periodic: what a stage knows that the supervisor needs if the stage dies."""

    stage: str
    # capture: {stream: {"last_t": ..., "fps": ...}}; temporal: {stream: {"open_actions": [...], "last_t": ...}}
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamRestored:
    """Temporal, after a crash: a replay was restored from its snapshot of ``generation`` at stream time
    ``t``; its capture may read it again from there (the replay rewind)."""

    stream: str
    generation: int
    t: float


@dataclass(frozen=True)
class ResumeReady:
    """Temporal: the answer to ``ResumeStream``. ``restored``: the snapshot (taken at stream time ``t``,
    unix time ``wall_time``) is the stream's state now, and its first frame continues it; otherwise the
    stream starts a new sequence (the open actions were ended, reason ``origin``)."""

    stream: str
    generation: int
    restored: bool
    t: float | None = None
    wall_time: float | None = None


@dataclass(frozen=True)
class StreamMovedOut:
    """Temporal: a stream removed to move (END reason ``moved``) left its last state in the store:
    its snapshot at message ``seq`` (stream time ``t``), or none (``snapshotted`` False: it never stepped)."""

    stream: str
    generation: int
    snapshotted: bool
    seq: int = -1
    t: float | None = None


@dataclass(frozen=True)
class StageDone:
    """The stage finished its work and exits 0."""

    stage: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageFailed:
    """The stage cannot go on. ``fatal``: a restart would fail the same way (bad engine, bad model)."""

    stage: str
    error: str
    fatal: bool


MESSAGE_TYPES = {cls.__name__: cls for cls in (
    AddStream, RemoveStream, StopReading, Drain, Release, UpstreamLost, ResumeStream,
    Hello, StreamChanged, Heartbeat, StreamRestored, ResumeReady, StreamMovedOut, StageDone, StageFailed,
)}


def encode(message: object) -> bytes:
    kind = type(message).__name__
    if kind not in MESSAGE_TYPES:
        raise ControlMessageError(f"not a control message: {kind}")
    return json.dumps({"kind": kind, **asdict(message)}, separators=(",", ":")).encode()


def decode(raw: bytes) -> object:
    try:
        data = json.loads(raw)
        cls = MESSAGE_TYPES[data.pop("kind")]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ControlMessageError(f"malformed control message: {exc}") from exc


def _waiting(socket: zmq.Socket, timeout_s: float) -> Iterator[list[bytes]]:
    """Every message waiting on ``socket`` (as its parts), after waiting up to ``timeout_s`` for the first."""
    if not socket.poll(int(timeout_s * 1000)):
        return
    while True:
        try:
            yield socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return


class StageLink:
    """A stage's end of the control channel. Used from the stage's main thread only."""

    def __init__(self, context: zmq.Context, endpoint: str, stage: str) -> None:
        self.stage = stage
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.IDENTITY, stage.encode())
        self._socket.setsockopt(zmq.LINGER, 2000)  # the final StageDone must get out
        self._socket.connect(endpoint)
        self._held: list[zmq.Socket] = []

    def hold_open(self, socket: zmq.Socket) -> None:
        """Keep the data socket ``socket`` open (and referenced: a collected socket closes) after the stage
        finished, until :meth:`wait_for_release`; the stage's process closes it at exit (see Release)."""
        self._held.append(socket)

    def wait_for_release(self, parent: ParentWatch, poll_s: float) -> None:
        """After StageDone: wait for the supervisor's Release, or for the supervisor to be gone."""
        while parent.parent_alive():
            if any(isinstance(m, Release) for m in self.receive(poll_s)):
                return

    def hello(self) -> None:
        """Tell the supervisor this stage is set up and can work."""
        self.send(Hello(self.stage, os.getpid()))

    def send(self, message: object) -> None:
        self._socket.send(encode(message))

    def receive(self, timeout_s: float = 0.0) -> list[object]:
        """Every command waiting, after waiting up to ``timeout_s`` for the first."""
        return [decode(parts[0]) for parts in _waiting(self._socket, timeout_s)]

    def close(self, linger: int | None = None) -> None:
        self._socket.close(linger=linger)


class ParentWatch:
    """Notices that the supervisor is gone (its child is re-parented), so a stage never runs orphaned."""

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid


class SupervisorChannel:
    """The supervisor's end of the control channel: a ROUTER bound in the run's folder.

    A stage's identity is its name, so a restarted stage takes over its
    predecessor's address (ROUTER_HANDOVER); a message to a stage that is not
    connected (yet, or any more) is refused at once (ROUTER_MANDATORY) and
    :meth:`send` says so, since the stage's Hello will ask again.
    """

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)

    def send(self, stage: str, message: object) -> bool:
        """False when ``stage`` is not connected; never waits."""
        try:
            self._socket.send_multipart([stage.encode(), encode(message)], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def receive(self, timeout_s: float) -> list[tuple[str, object | ControlMessageError]]:
        """Every (stage, message) waiting, after waiting up to ``timeout_s`` for the first; a message
        that does not follow the protocol comes as its ControlMessageError, for the caller to report."""
        received: list[tuple[str, object | ControlMessageError]] = []
        for parts in _waiting(self._socket, timeout_s):
            if len(parts) != 2:
                continue  # not a DEALER of ours: nothing to answer
            stage = parts[0].decode(errors="replace")
            try:
                received.append((stage, decode(parts[1])))
            except ControlMessageError as exc:
                received.append((stage, exc))
        return received

    def close(self) -> None:
        self._socket.close()
