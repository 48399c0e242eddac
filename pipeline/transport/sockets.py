"""The stages' data sockets, made in one place: who binds, how much each queues, how long each lingers.

    capture --frames--> embed --embeddings--> temporal
    capture --previews--> overlay <--steps and events-- temporal

A socket's high-water mark is how many messages it queues before a sender
blocks (or, for the overlay's senders, lets go). Frames are large (150 KB at
224x224), so their queues hold ``transport.high_water_mark`` messages.
Embeddings, scored steps and events are a few KB, and previews only feed
the overlay: their queues hold :data:`SMALL_MESSAGE_QUEUE_FACTOR` times more,
so a burst of them never holds up the frames behind it.

What was sent must reach the next stage even as its sender exits (LINGER
-1); a dead peer cannot keep a sender alive past the supervisor's stop
deadline, which kills what is left. LINGER alone is not enough: it waits
for what the sender still queues, but what already sits in the kernel's
socket buffer is dropped by a receiver that is behind when its sender
closes (zeromq/libzmq#4660; a GPU's slow first step did it here). So a
finished stage keeps its frames or embeddings socket open until the
supervisor releases it, once every stage after it has finished
(``StageLink.hold_open``, ``Release``). The overlay is the exception: at
exit its queue gets :data:`OVERLAY_LINGER_MS`, so a dead or stopped overlay
never holds up a stop.
"""

from __future__ import annotations

from collections.abc import Sequence

import zmq

SMALL_MESSAGE_QUEUE_FACTOR = 4
OVERLAY_LINGER_MS = 1000
# Parts below this are copied into the message even when sent with copy=False. pyzmq's zero-copy hands
# each buffer's release to its garbage-collector thread (a wake-up and the GIL per message): on 2 shared
# cores that cost about 90 us of CPU per 224x224 frame, against about 10 us to copy its 150 KB.
COPY_BELOW_BYTES = 1 << 20


def small_message_queue(high_water_mark: int) -> int:
    return SMALL_MESSAGE_QUEUE_FACTOR * high_water_mark


def frames_out(context: zmq.Context, endpoints: Sequence[str], high_water_mark: int) -> zmq.Socket:
    """Capture's PUSH to every embed worker (ZeroMQ spreads the frames over them)."""
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, high_water_mark)
    socket.setsockopt(zmq.LINGER, -1)
    socket.copy_threshold = COPY_BELOW_BYTES
    for endpoint in endpoints:
        socket.connect(endpoint)
    return socket


def frames_in(context: zmq.Context, endpoint: str, high_water_mark: int) -> zmq.Socket:
    """An embed worker's PULL, bound: capture workers come and go, the embed worker stays."""
    return _bound_pull(context, endpoint, high_water_mark)


def embeddings_out(context: zmq.Context, endpoint: str, high_water_mark: int) -> zmq.Socket:
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, small_message_queue(high_water_mark))
    socket.setsockopt(zmq.LINGER, -1)
    socket.connect(endpoint)
    return socket


def embeddings_in(context: zmq.Context, endpoint: str, high_water_mark: int) -> zmq.Socket:
    return _bound_pull(context, endpoint, small_message_queue(high_water_mark))


def overlay_out(context: zmq.Context, endpoint: str, high_water_mark: int) -> zmq.Socket | None:
    """A PUSH to the overlay stage, or None without one. Sends to it must never wait (NOBLOCK):
    with the overlay behind or down, the queue fills and what does not fit is let go."""
    if not endpoint:
        return None
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, small_message_queue(high_water_mark))
    socket.setsockopt(zmq.LINGER, OVERLAY_LINGER_MS)
    socket.copy_threshold = COPY_BELOW_BYTES
    socket.connect(endpoint)
    return socket


def overlay_in(context: zmq.Context, endpoint: str, high_water_mark: int) -> zmq.Socket:
    return _bound_pull(context, endpoint, small_message_queue(high_water_mark))


def _bound_pull(context: zmq.Context, endpoint: str, high_water_mark: int) -> zmq.Socket:
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.RCVHWM, high_water_mark)
    socket.bind(endpoint)
    return socket


def close(sockets: Sequence[zmq.Socket | None], orphaned: bool) -> None:
    """Closes each socket (None is skipped). Each keeps its own linger, unless the supervisor is gone:
    then nobody is left to take what is queued, so it is dropped instead of waited on."""
    for socket in sockets:
        if socket is not None:
            socket.close(linger=0 if orphaned else None)
