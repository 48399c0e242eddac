"""What preparing a frame for the backbone costs, and how close its embedding stays to OpenCV's area
resampling (the preparation the demo head was trained on): ``python -m tools.benchmark_preparation``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from pipeline.sources.decoding import iter_sampled_frames, prepare_frame

Preparation = Callable[[np.ndarray, int, int], np.ndarray]


def area_preparation(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """The preparation before 2026-12-03: OpenCV's ``INTER_AREA`` straight to the input size."""
    interpolation = cv2.INTER_AREA if bgr.shape[1] >= width else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=interpolation), cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Comparison:
    """One kind of video: CPU ms per frame of each preparation, and the cosine similarity of the two
    preparations' embeddings, frame by frame."""

    source: str
    frame_size: tuple[int, int]
    frames: int
    area_ms: float
    prepared_ms: float
    cosine_mean: float
    cosine_min: float


def spread_frames(video: Path, count: int, every: int = 5) -> list[np.ndarray]:
    """``count`` decoded BGR frames of ``video``, one in ``every``."""
    frames = [f.image for f in islice(iter_sampled_frames(video, lambda t: True), 0, count * every, every)]
    if not frames:
        raise ValueError(f"no frame decoded from {video}")
    return frames


def cpu_ms_per_frame(prepare: Preparation, frames: Sequence[np.ndarray], size: int, repeats: int) -> float:
    """The best of ``repeats`` passes, in CPU (not wall) milliseconds per frame, OpenCV on one thread."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # as in capture, where each stream's thread prepares its own frames
    try:
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            for frame in frames:
                prepare(frame, size, size)
            best = min(best, (time.process_time() - start) / len(frames))
        return best * 1e3
    finally:
        cv2.setNumThreads(threads)


def embeddings(engine, prepare: Preparation, frames: Sequence[np.ndarray], size: int, batch: int = 16) -> np.ndarray:
    pixels = np.stack([prepare(frame, size, size) for frame in frames])
    return np.concatenate([engine.embed(pixels[i:i + batch]).embedding for i in range(0, len(pixels), batch)])


def embedding_cosines(engine, frames: Sequence[np.ndarray], size: int = 224) -> np.ndarray:
    """Per frame, the cosine of ``prepare_frame``'s embedding and ``INTER_AREA``'s."""
    reference = embeddings(engine, area_preparation, frames, size)
    ours = embeddings(engine, prepare_frame, frames, size)
    return (reference * ours).sum(axis=1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(ours, axis=1)


def compare(engine, source: str, frames: Sequence[np.ndarray], size: int = 224, repeats: int = 3) -> Comparison:
    cosine = embedding_cosines(engine, frames, size)
    height, width = frames[0].shape[:2]
    return Comparison(source, (width, height), len(frames), cpu_ms_per_frame(area_preparation, frames, size, repeats),
                      cpu_ms_per_frame(prepare_frame, frames, size, repeats), float(cosine.mean()),
                      float(cosine.min()))
