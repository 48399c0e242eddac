"""What travels between stages over ZeroMQ: a small header and raw array buffers (no
pickle). A frame's pixels are copied into the message once (``transport/sockets.py``
says why) and received without a copy.

    frame message      [b"frame", header JSON, pixels (H*W*3 uint8, RGB)]   (no pixels on an END-only marker)
    embedding message  one part: b"EMB\x01", the header's fixed fields (``EMBEDDING_FIXED``, little-endian),
                       stream and reason (UTF-8), padding to 4 bytes, then embedding and stats (float32, <f4)

An embedding is one part with a binary header because the temporal worker receives one per
stream-step, with a GRU step's worth of CPU to spare for it: four parts and a JSON header cost
about 29 us of its CPU per message on a 2-core VM, this about 5 (``python -m tools.bench.temporal_cost``
says what a step costs in place). Frames carry 150 KB of pixels each and keep the readable header.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, replace
from enum import IntFlag
from typing import Sequence

import numpy as np

from pipeline.errors import ActionPipeError

FRAME_KIND = b"frame"
# The first bytes of an embedding message; the last is the format's version.
EMBEDDING_MAGIC = b"EMB\x01"
# seq, t, capture_wall, flags, embed_wall, embedding_dim, stats_dim, worker, generation, live, has_arrays,
# then the byte lengths of stream and reason.
EMBEDDING_FIXED = struct.Struct("<qddIdIIIqBBHH")
_EMBEDDING_ARRAYS_AT = len(EMBEDDING_MAGIC) + EMBEDDING_FIXED.size
_FLOAT32 = np.dtype("<f4")


class MessageError(ActionPipeError, ValueError):
    """A message that does not follow the wire format."""

    restart_helps = True


class Flags(IntFlag):
    NONE = 0
    START = 1  # first frame of a sequence (open, reconnect, loop, restart): reset the stream's state
    END = 2  # end of a sequence: flush and free the stream's state


# The flags as plain ints, for tests made at every step: an IntFlag's & builds a new flag (1.5 us), an int's
# costs 0.06 us.
START_FLAG, END_FLAG = int(Flags.START), int(Flags.END)

# An END with one of these reasons ends the stream itself; any other (reconnect, loop) only its sequence.
FINAL_END_REASONS = frozenset({"end_of_stream", "removed", "moved", "stopped", "failed"})


@dataclass(frozen=True)
class FrameHeader:
    stream: str
    seq: int  # per stream and generation, from 0, increasing by one per message
    t: float  # stream time in seconds (the step's timestamp)
    capture_wall: float  # time.time() when the frame was captured
    height: int
    width: int
    flags: int = 0
    dtype: str = "uint8"
    # Bumped by the supervisor each time the stream is (re)assigned to a capture
    # process; seq restarts at 0 with each generation.
    generation: int = 0
    reason: str = ""  # why a START or END happened (open, reconnect, loop, removed, ...)
    live: bool = False  # a live source: the temporal stage waits less for a missing frame

    @property
    def has_pixels(self) -> bool:
        return self.height > 0 and self.width > 0

    def with_flags(self, flags: int) -> "FrameHeader":
        return replace(self, flags=flags)


@dataclass(frozen=True)
class EmbeddingHeader:
    stream: str
    seq: int
    t: float
    capture_wall: float
    flags: int
    embed_wall: float  # time.time() when the embedding was made
    embedding_dim: int
    stats_dim: int
    worker: int = 0
    generation: int = 0
    reason: str = ""
    live: bool = False


def _header_json(header: object) -> bytes:
    return json.dumps(asdict(header), separators=(",", ":")).encode()


_FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _parse_header(raw: bytes, cls: type, what: str):
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        header = cls(**data)
    except (ValueError, TypeError) as exc:
        raise MessageError(f"malformed {what} header: {exc}") from exc
    # A header that parses but carries the wrong types would fail far from here.
    for name, field_type in cls.__annotations__.items():
        value = getattr(header, name)
        allowed = _FIELD_TYPES[field_type]
        if (isinstance(value, bool) and field_type != "bool") or not isinstance(value, allowed):
            raise MessageError(f"malformed {what} header: {name} must be {field_type}, got {value!r}")
    if not header.stream or header.seq < 0 or header.generation < 0:
        raise MessageError(f"malformed {what} header: empty stream or negative seq/generation")
    return header


def encode_frame(header: FrameHeader, pixels: np.ndarray | None) -> list:
    if pixels is None:
        if header.has_pixels:
            raise MessageError(f"frame {header.stream}#{header.seq} declares {header.height}x{header.width} but has no pixels")
        return [FRAME_KIND, _header_json(header)]
    if pixels.dtype != np.uint8 or pixels.shape != (header.height, header.width, 3):
        raise MessageError(
            f"frame {header.stream}#{header.seq}: pixels {pixels.dtype}{list(pixels.shape)} do not match the header "
            f"uint8[{header.height}, {header.width}, 3]"
        )
    return [FRAME_KIND, _header_json(header), np.ascontiguousarray(pixels)]


def decode_frame(parts: Sequence) -> tuple[FrameHeader, np.ndarray | None]:
    """Pixels come back as a view on the received buffer (no copy)."""
    if len(parts) not in (2, 3) or bytes(parts[0]) != FRAME_KIND:
        raise MessageError(f"not a frame message ({len(parts)} parts)")
    header = _parse_header(bytes(parts[1]), FrameHeader, "frame")
    if len(parts) == 2:
        return header, None
    buffer = memoryview(parts[2].buffer if hasattr(parts[2], "buffer") else parts[2]).cast("B")
    expected = header.height * header.width * 3
    if header.dtype != "uint8" or buffer.nbytes != expected:
        raise MessageError(
            f"frame {header.stream}#{header.seq}: {buffer.nbytes} pixel bytes of {header.dtype}, header says {expected} uint8"
        )
    return header, np.frombuffer(buffer, dtype=np.uint8).reshape(header.height, header.width, 3)


def encode_embedding(header: EmbeddingHeader, embedding: np.ndarray | None, stats: np.ndarray | None) -> bytes:
    """One message part (send it with ``send``); without ``embedding`` and ``stats`` it is an END-only marker."""
    has_arrays = embedding is not None and stats is not None
    stream, reason = header.stream.encode(), header.reason.encode()
    head = EMBEDDING_MAGIC + EMBEDDING_FIXED.pack(
        header.seq, header.t, header.capture_wall, header.flags, header.embed_wall, header.embedding_dim,
        header.stats_dim, header.worker, header.generation, header.live, has_arrays, len(stream), len(reason),
    ) + stream + reason
    head += b"\x00" * (-len(head) % 4)  # the arrays start 4-byte aligned
    if not has_arrays:
        return head
    embedding = np.ascontiguousarray(embedding, dtype=_FLOAT32)
    stats = np.ascontiguousarray(stats, dtype=_FLOAT32)
    if embedding.size != header.embedding_dim or stats.size != header.stats_dim:
        raise MessageError(f"embedding {header.stream}#{header.seq}: arrays of {embedding.size}/{stats.size} floats, "
                           f"the header says {header.embedding_dim}/{header.stats_dim}")
    return b"".join((head, embedding.data, stats.data))


def decode_embedding(data: bytes | memoryview) -> tuple[EmbeddingHeader, np.ndarray | None, np.ndarray | None]:
    """The arrays are read-only views on ``data``; None for both on an END-only marker."""
    if bytes(data[:len(EMBEDDING_MAGIC)]) != EMBEDDING_MAGIC:
        raise MessageError(f"not an embedding message of this version (it starts {bytes(data[:8])!r}, not "
                           f"{EMBEDDING_MAGIC!r}): are both stages the same version of the pipeline?")
    try:
        (seq, t, capture_wall, flags, embed_wall, embedding_dim, stats_dim, worker, generation, live, has_arrays,
         stream_len, reason_len) = EMBEDDING_FIXED.unpack_from(data, len(EMBEDDING_MAGIC))
        text_end = _EMBEDDING_ARRAYS_AT + stream_len + reason_len
        if text_end > len(data):
            raise ValueError(f"its stream and reason need {text_end} bytes, the message has {len(data)}")
        stream = bytes(data[_EMBEDDING_ARRAYS_AT:_EMBEDDING_ARRAYS_AT + stream_len]).decode()
        reason = bytes(data[_EMBEDDING_ARRAYS_AT + stream_len:text_end]).decode()
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise MessageError(f"malformed embedding header: {exc}") from exc
    if not stream or seq < 0 or generation < 0 or live > 1 or has_arrays > 1:
        raise MessageError(f"malformed embedding header: empty stream, negative seq/generation or a flag not 0/1 "
                           f"(stream {stream!r}, seq {seq}, generation {generation})")
    header = EmbeddingHeader(stream, seq, t, capture_wall, flags, embed_wall, embedding_dim, stats_dim, worker,
                             generation, reason, bool(live))
    arrays_at = text_end + (-text_end % 4)
    expected = arrays_at + 4 * (embedding_dim + stats_dim) if has_arrays else arrays_at
    if len(data) != expected:
        raise MessageError(f"embedding {stream}#{seq}: {len(data)} bytes, its header says {expected} "
                           f"({embedding_dim}/{stats_dim} floats{'' if has_arrays else ', none sent'})")
    if not has_arrays:
        return header, None, None
    embedding = np.frombuffer(data, _FLOAT32, embedding_dim, arrays_at)
    stats = np.frombuffer(data, _FLOAT32, stats_dim, arrays_at + 4 * embedding_dim)
    return header, embedding, stats
