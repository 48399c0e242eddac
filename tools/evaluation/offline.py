"""The offline reference path: a whole video through backbone and head as one sequence.

The streaming pipeline must reproduce these numbers step for step; keep every
transformation here shared with it (sampling, frame preparation, engine, head).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.base import EmbeddingEngine
from engines.temporal_head import TemporalHead
from pipeline.sources.decoding import iter_sampled_frames, prepare_frame
from pipeline.sources.sampling import StepSampler


@dataclass(frozen=True)
class VideoSteps:
    times: np.ndarray  # float64 [T]
    embedding: np.ndarray  # float32 [T, E]
    stats: np.ndarray  # float32 [T, L]


def _batched_steps(path: Path, step_rate: float, width: int, height: int, batch_size: int) -> Iterator[tuple[list[float], np.ndarray]]:
    sampler = StepSampler(step_rate)
    times: list[float] = []
    frames: list[np.ndarray] = []
    for frame in iter_sampled_frames(path, sampler.accept):
        times.append(frame.t)
        frames.append(prepare_frame(frame.image, width, height))
        if len(frames) == batch_size:
            yield times, np.stack(frames)
            times, frames = [], []
    if frames:
        yield times, np.stack(frames)


def embed_video(path: Path, engine: EmbeddingEngine, step_rate: float, batch_size: int = 32) -> VideoSteps:
    spec = engine.spec
    all_times: list[float] = []
    embeddings: list[np.ndarray] = []
    stats_list: list[np.ndarray] = []
    for times, frames in _batched_steps(Path(path), step_rate, spec.input_width, spec.input_height, batch_size):
        out = engine.embed(frames)
        all_times.extend(times)
        embeddings.append(out.embedding)
        stats_list.append(out.stats)
    if not all_times:
        raise ValueError(f"{path}: decoded no frames")
    return VideoSteps(
        times=np.asarray(all_times, dtype=np.float64),
        embedding=np.concatenate(embeddings).astype(np.float32, copy=False),
        stats=np.concatenate(stats_list).astype(np.float32, copy=False),
    )


@torch.inference_mode()
def score_steps(head: TemporalHead, embedding: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Class probabilities [T, C] for one stream run from a fresh state."""
    device = head.input_mean.device
    out = head.forward_sequence(
        torch.from_numpy(np.ascontiguousarray(embedding))[None].to(device),
        torch.from_numpy(np.ascontiguousarray(stats))[None].to(device),
    )
    return out.logits[0].softmax(dim=-1).cpu().numpy()
