"""What travels between stages over ZeroMQ: multipart messages, a small JSON header
and raw array buffers (no pickle). A frame's pixels are copied into the message once
(``transport/sockets.py`` says why) and received without a copy.

    frame message      [b"frame", header JSON, pixels (H*W*3 uint8, RGB)]   (no pixels on an END-only marker)
    embedding message  [b"embedding", header JSON, embedding float32, stats float32]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import IntFlag
from typing import Sequence

import numpy as np

from pipeline.errors import ActionPipeError

FRAME_KIND = b"frame"
EMBEDDING_KIND = b"embedding"


class MessageError(ActionPipeError, ValueError):
    """A message that does not follow the wire format."""

    restart_helps = True


class Flags(IntFlag):
    NONE = 0
    START = 1  # first frame of a sequence (open, reconnect, loop, restart): reset the stream's state
    END = 2  # end of a sequence: flush and free the stream's state


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


def encode_embedding(header: EmbeddingHeader, embedding: np.ndarray | None, stats: np.ndarray | None) -> list:
    parts = [EMBEDDING_KIND, _header_json(header)]
    if embedding is not None and stats is not None:
        parts += [np.ascontiguousarray(embedding, dtype=np.float32), np.ascontiguousarray(stats, dtype=np.float32)]
    return parts


def decode_embedding(parts: Sequence) -> tuple[EmbeddingHeader, np.ndarray | None, np.ndarray | None]:
    if len(parts) not in (2, 4) or bytes(parts[0]) != EMBEDDING_KIND:
        raise MessageError(f"not an embedding message ({len(parts)} parts)")
    header = _parse_header(bytes(parts[1]), EmbeddingHeader, "embedding")
    if len(parts) == 2:
        return header, None, None
    try:
        embedding = np.frombuffer(bytes(parts[2]), dtype=np.float32)
        stats = np.frombuffer(bytes(parts[3]), dtype=np.float32)
    except ValueError as exc:  # a buffer whose length is not a multiple of 4
        raise MessageError(f"embedding {header.stream}#{header.seq}: {exc}") from exc
    if embedding.size != header.embedding_dim or stats.size != header.stats_dim:
        raise MessageError(
            f"embedding {header.stream}#{header.seq}: sizes {embedding.size}/{stats.size}, header says "
            f"{header.embedding_dim}/{header.stats_dim}"
        )
    return header, embedding, stats
