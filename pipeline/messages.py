"""What travels between stages over ZeroMQ: multipart messages, a small JSON header
and raw array buffers (no pickle). Large pixel buffers are sent without copying.

    frame message      [b"frame", header JSON, pixels (H*W*3 uint8, RGB)]   (no pixels on an END-only marker)
    embedding message  [b"embedding", header JSON, embedding float32, stats float32]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import IntFlag
from typing import Sequence

import numpy as np

FRAME_KIND = b"frame"
EMBEDDING_KIND = b"embedding"
# Below this size a copy is cheaper than pyzmq's zero-copy bookkeeping.
ZERO_COPY_MIN_BYTES = 64 * 1024


class MessageError(ValueError):
    """A message that does not follow the wire format."""


class Flags(IntFlag):
    NONE = 0
    START = 1  # first frame after open or reconnect: reset the stream's state
    END = 2  # end of stream: flush and free the stream's state


@dataclass(frozen=True)
class FrameHeader:
    stream: str
    seq: int  # per stream, increasing by one per message, never restarting
    t: float  # stream time in seconds (the step's timestamp)
    capture_wall: float  # time.time() when the frame was captured
    height: int
    width: int
    flags: int = 0
    dtype: str = "uint8"

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


def _header_json(header: object) -> bytes:
    return json.dumps(asdict(header), separators=(",", ":")).encode()


def _parse_header(raw: bytes, cls: type, what: str):
    try:
        return cls(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise MessageError(f"malformed {what} header: {exc}") from exc


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
    buffer = parts[2].buffer if hasattr(parts[2], "buffer") else parts[2]
    expected = header.height * header.width * 3
    if len(buffer) != expected:
        raise MessageError(f"frame {header.stream}#{header.seq}: {len(buffer)} pixel bytes, header says {expected}")
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
    embedding = np.frombuffer(bytes(parts[2]), dtype=np.float32)
    stats = np.frombuffer(bytes(parts[3]), dtype=np.float32)
    if embedding.size != header.embedding_dim or stats.size != header.stats_dim:
        raise MessageError(
            f"embedding {header.stream}#{header.seq}: sizes {embedding.size}/{stats.size}, header says "
            f"{header.embedding_dim}/{header.stats_dim}"
        )
    return header, embedding, stats
