"""A head checkpoint's configuration (classes, step rate, backbone), readable without PyTorch.

The supervisor and the capture stage need the step rate and the backbone's
input size, not the weights; :func:`read_head_config` parses the safetensors
header (an 8-byte little-endian length, then JSON whose ``__metadata__``
holds the strings) so that they never load PyTorch.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from engines.spec import BackboneSpec
from pipeline.errors import ActionPipeError

# A header this large is not a head checkpoint (ours are a few KB).
_MAX_HEADER_BYTES = 16 * 1024 * 1024


CHECKPOINT_FORMAT = "streaming-action-head/1"
HEAD_KINDS = ("gru", "frame_only")


class CheckpointError(ActionPipeError, ValueError):
    """A head checkpoint is missing, malformed, or does not fit the backbone."""


@dataclass(frozen=True)
class HeadConfig:
    classes: tuple[str, ...]
    step_rate_hz: float
    backbone: BackboneSpec
    kind: str = "gru"
    projection_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.2
    input_dropout: float = 0.0
    # > 0 adds the change against an exponential moving average of past frame
    # vectors (decay per step), exposing slow changes that one step hides.
    ema_decay: float = 0.0
    # 0: the whole L2-normalised embedding; K > 0: only its first K principal
    # components over the training streams (the basis travels in the weights).
    # The full 1280 dimensions let the head memorise how each training scene
    # looks; a few components keep what changes when something happens.
    embedding_components: int = 0

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise CheckpointError(f"head kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        if len(self.classes) < 2:
            raise CheckpointError("a head needs background plus at least one action class")
        if not 0 <= self.embedding_components <= self.backbone.embedding_dim:
            raise CheckpointError(
                f"embedding_components must be between 0 and {self.backbone.embedding_dim}, "
                f"got {self.embedding_components}"
            )

    @property
    def embedding_vector_dim(self) -> int:
        """How many values of a frame vector describe the embedding."""
        return self.embedding_components or self.backbone.embedding_dim

    @property
    def frame_vector_dim(self) -> int:
        return self.embedding_vector_dim + self.backbone.stats_dim + 1

    @property
    def uses_ema(self) -> bool:
        return self.kind == "gru" and self.ema_decay > 0.0

    @property
    def state_vector_dim(self) -> int:
        """Per-stream carried frame state: r_{t-1}, and the EMA m_{t-1} when used."""
        return self.frame_vector_dim * (2 if self.uses_ema else 1)

    @property
    def input_dim(self) -> int:
        if self.kind != "gru":
            return self.frame_vector_dim
        return self.frame_vector_dim * (3 if self.uses_ema else 2)

    def to_metadata(self) -> dict[str, str]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["backbone"] = asdict(self.backbone)
        return {"format": CHECKPOINT_FORMAT, "head": json.dumps(data, sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str) -> "HeadConfig":
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{source}: not a head checkpoint of format {CHECKPOINT_FORMAT!r} "
                f"(found {metadata.get('format')!r})"
            )
        try:
            data = json.loads(metadata["head"])
            data["classes"] = tuple(data["classes"])
            data["backbone"] = BackboneSpec(**data["backbone"])
            return cls(**data)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{source}: head metadata is malformed: {exc}") from exc


# Metadata key of the event detector's settings chosen for this head on validation streams (JSON).
EVENTS_METADATA_KEY = "events"


def read_head_config(path: str | Path) -> HeadConfig:
    """The head's configuration from the checkpoint's metadata, without loading its weights."""
    return HeadConfig.from_metadata(read_checkpoint_metadata(path), str(path))


def read_head_events(path: str | Path) -> dict | None:
    """The event detector settings frozen in the checkpoint (None for a head trained without them)."""
    text = read_checkpoint_metadata(path).get(EVENTS_METADATA_KEY)
    if text is None:
        return None
    try:
        events = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: its '{EVENTS_METADATA_KEY}' metadata is not JSON: {exc}") from None
    if not isinstance(events, dict):
        raise CheckpointError(f"{path}: its '{EVENTS_METADATA_KEY}' metadata is not an object")
    return events


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors checkpoint's metadata strings, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"head checkpoint not found: {path}")
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if not 0 < length <= _MAX_HEADER_BYTES:
                raise ValueError(f"header length {length} is out of range")
            header = json.loads(handle.read(length))
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError("__metadata__ is not an object")
    except (OSError, ValueError, struct.error) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint: {exc}") from exc
    return metadata
