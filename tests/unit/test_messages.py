import numpy as np
import pytest
import zmq

from pipeline.transport.messages import (
    EmbeddingHeader,
    Flags,
    FrameHeader,
    MessageError,
    decode_embedding,
    decode_frame,
    encode_embedding,
    encode_frame,
)


def _header(**kw) -> FrameHeader:
    base = dict(stream="cam1", seq=7, t=1.75, capture_wall=1700000000.5, height=224, width=224, flags=int(Flags.START))
    base.update(kw)
    return FrameHeader(**base)


def test_frame_round_trip_over_a_real_socket_without_pickle():
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind("inproc://frames")
    push.connect("inproc://frames")
    try:
        push.send_multipart(encode_frame(_header(), pixels), copy=False)
        parts = pull.recv_multipart(copy=False)
        header, got = decode_frame(parts)
    finally:
        push.close()
        pull.close()
        ctx.term()
    assert header == _header()
    assert Flags.START in Flags(header.flags)
    np.testing.assert_array_equal(got, pixels)
    assert not got.flags.owndata  # a view on the received buffer, not a copy
    assert bytes(parts[1]).startswith(b"{")  # the header is JSON


def test_end_only_marker_has_no_pixels():
    header = _header(height=0, width=0, flags=int(Flags.END))
    parts = encode_frame(header, None)
    assert len(parts) == 2
    assert decode_frame(parts) == (header, None)


@pytest.mark.parametrize(
    "pixels, message",
    [
        (np.zeros((224, 224, 3), dtype=np.float32), "do not match"),
        (np.zeros((100, 224, 3), dtype=np.uint8), "do not match"),
    ],
)
def test_pixels_that_disagree_with_the_header_are_refused(pixels, message):
    with pytest.raises(MessageError, match=message):
        encode_frame(_header(), pixels)


def test_truncated_or_foreign_messages_are_refused():
    parts = encode_frame(_header(), np.zeros((224, 224, 3), dtype=np.uint8))
    with pytest.raises(MessageError, match="pixel bytes"):
        decode_frame([parts[0], parts[1], b"\x00" * 100])
    with pytest.raises(MessageError, match="not a frame"):
        decode_frame([b"embedding", parts[1]])
    with pytest.raises(MessageError, match="malformed"):
        decode_frame([b"frame", b"{not json"])


def test_embedding_round_trip():
    header = EmbeddingHeader("cam1", 3, 0.75, 1.0, 0, 2.0, embedding_dim=1280, stats_dim=49, worker=1)
    emb = np.arange(1280, dtype=np.float32)
    stats = np.linspace(0, 1, 49, dtype=np.float32)
    got_header, got_emb, got_stats = decode_embedding([bytes(p) if not isinstance(p, np.ndarray) else p.tobytes() for p in encode_embedding(header, emb, stats)])
    assert got_header == header
    np.testing.assert_array_equal(got_emb, emb)
    np.testing.assert_array_equal(got_stats, stats)
    with pytest.raises(MessageError, match="sizes"):
        decode_embedding([b"embedding", encode_embedding(header, emb, stats)[1], emb[:10].tobytes(), stats.tobytes()])
