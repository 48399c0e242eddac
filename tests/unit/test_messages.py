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


def test_embedding_round_trip_over_a_real_socket_keeps_every_field():
    header = EmbeddingHeader("cam-é/1", 3, 0.75, 1700000000.25, int(Flags.START | Flags.END), 1700000000.5,
                             embedding_dim=1280, stats_dim=49, worker=2, generation=5, reason="reconnect", live=True)
    emb = np.arange(1280, dtype=np.float32)
    stats = np.linspace(0, 1, 49, dtype=np.float32)
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind("inproc://embeddings")
    push.connect("inproc://embeddings")
    try:
        push.send(encode_embedding(header, emb, stats))
        data = pull.recv()
        assert not pull.rcvmore  # one part
    finally:
        push.close()
        pull.close()
        ctx.term()
    got_header, got_emb, got_stats = decode_embedding(data)
    assert got_header == header
    np.testing.assert_array_equal(got_emb, emb)
    np.testing.assert_array_equal(got_stats, stats)
    assert got_emb.dtype == np.float32 and got_emb.ctypes.data % 4 == 0


def test_an_end_only_embedding_marker_has_no_arrays():
    header = EmbeddingHeader("cam1", 9, 2.25, 1.0, int(Flags.END), 2.0, 0, 0, reason="stopped")
    got_header, emb, stats = decode_embedding(encode_embedding(header, None, None))
    assert got_header == header
    assert emb is None and stats is None


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-4], "bytes, its header says"),
    (lambda data: data + b"\x00" * 4, "bytes, its header says"),
    (lambda data: data[:20], "malformed embedding header"),
    (lambda data: b"embedding" + data, "not an embedding message of this version"),
    (lambda data: b"EMB\x00" + data[4:], "not an embedding message of this version"),
    (lambda data: data[:len(b"EMB\x01") + 57] + b"\xff" + data[len(b"EMB\x01") + 58:], "malformed embedding header"),
])
def test_truncated_foreign_or_damaged_embeddings_are_refused(damage, message):
    header = EmbeddingHeader("cam1", 3, 0.75, 1.0, 0, 2.0, embedding_dim=1280, stats_dim=49)
    data = encode_embedding(header, np.zeros(1280, np.float32), np.zeros(49, np.float32))
    with pytest.raises(MessageError, match=message):
        decode_embedding(damage(data))


def test_arrays_that_disagree_with_the_embedding_header_are_refused():
    header = EmbeddingHeader("cam1", 3, 0.75, 1.0, 0, 2.0, embedding_dim=1280, stats_dim=49)
    with pytest.raises(MessageError, match="1270/49 floats"):
        encode_embedding(header, np.zeros(1270, np.float32), np.zeros(49, np.float32))


@pytest.mark.parametrize("field, value", [("stream", ""), ("seq", -1), ("generation", -2)])
def test_embedding_headers_out_of_range_are_refused(field, value):
    fields = dict(stream="cam1", seq=3, t=0.75, capture_wall=1.0, flags=0, embed_wall=2.0, embedding_dim=4, stats_dim=2)
    fields[field] = value
    data = encode_embedding(EmbeddingHeader(**fields), np.zeros(4, np.float32), np.zeros(2, np.float32))
    with pytest.raises(MessageError, match="empty stream, negative seq/generation"):
        decode_embedding(data)
