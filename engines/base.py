"""The one interface every embedding backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engines.spec import BackboneSpec
from pipeline.errors import ActionPipeError


class EngineError(ActionPipeError, RuntimeError):
    """A backend failed to load or run."""


class EngineUnavailableError(EngineError):
    """The backend cannot run on this machine (library or device missing)."""


class FrameBatchError(ActionPipeError, ValueError):
    """Frames handed to an engine are not what its backbone consumes."""

    restart_helps = True


@dataclass(frozen=True)
class FrameEmbeddings:
    """One row per input frame."""

    embedding: np.ndarray  # float32 [N, embedding_dim]
    stats: np.ndarray  # float32 [N, stats_dim]

    def __len__(self) -> int:
        return int(self.embedding.shape[0])


class EmbeddingEngine(Protocol):
    """Turns a batch of uint8 RGB frames into embeddings. Owns its resources."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> BackboneSpec: ...

    def embed(self, frames: np.ndarray) -> FrameEmbeddings: ...

    def close(self) -> None: ...


def validate_frames(frames: np.ndarray, spec: BackboneSpec, max_batch: int | None = None) -> np.ndarray:
    """Check a batch against the backbone's input contract; returns it C-contiguous."""
    if not isinstance(frames, np.ndarray):
        raise FrameBatchError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise FrameBatchError(
            f"frames must be uint8 RGB, got dtype {frames.dtype}; capture hands the engine raw pixels"
        )
    expected = (spec.input_height, spec.input_width, 3)
    if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
        raise FrameBatchError(
            f"frames must have shape [N, {expected[0]}, {expected[1]}, 3] (NHWC RGB, resized to the "
            f"{spec.name} input), got {list(frames.shape)}"
        )
    if frames.shape[0] == 0:
        raise FrameBatchError("frames batch is empty")
    if max_batch is not None and frames.shape[0] > max_batch:
        raise FrameBatchError(f"batch of {frames.shape[0]} frames exceeds this engine's maximum of {max_batch}")
    return np.ascontiguousarray(frames)
