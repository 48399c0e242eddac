"""The stages' data sockets over real ZeroMQ (inproc): what a send hands over."""

from __future__ import annotations

import numpy as np
import zmq

from pipeline.transport.messages import FrameHeader, decode_frame, encode_frame
from pipeline.transport.sockets import frames_in, frames_out, overlay_in, overlay_out


def _sent_then_changed(out_socket, in_socket) -> np.ndarray:
    """Send a 224x224 frame as the capture sender does (copy=False), change the array, return what arrived."""
    pixels = np.full((224, 224, 3), 7, dtype=np.uint8)
    header = FrameHeader(stream="cam", seq=0, t=0.0, capture_wall=0.0, height=224, width=224)
    out_socket.send_multipart(encode_frame(header, pixels), flags=zmq.NOBLOCK, copy=False)
    pixels[:] = 99  # the capture thread's next frame may reuse or change its buffer
    _, received = decode_frame(in_socket.recv_multipart())
    return received


def test_a_frame_is_copied_into_its_message_so_changing_the_array_after_the_send_changes_nothing():
    # Over inproc a zero-copy part would be the sender's own buffer: the change would arrive.
    context = zmq.Context()
    sockets = []
    try:
        sockets += [frames_in(context, "inproc://frames", 4), frames_out(context, ["inproc://frames"], 4)]
        frame = _sent_then_changed(sockets[1], sockets[0]).copy()
        sockets += [overlay_in(context, "inproc://previews", 4), overlay_out(context, "inproc://previews", 4)]
        preview = _sent_then_changed(sockets[3], sockets[2]).copy()
    finally:
        for socket in sockets:
            socket.close(linger=0)
        context.term()
    assert (frame == 7).all()
    assert (preview == 7).all()
