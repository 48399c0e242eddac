"""Build (or find in the cache) the TensorRT engine for this GPU.

    python -m tools.build_engine                                   # FP32, batches 1..32
    python -m tools.build_engine --precision fp16 --max-batch 64
    python -m tools.build_engine --precision int8 --calibrate data/calib_videos/ --calibration-frames 200

The engine is cached under build/engines/ by ONNX model hash, TensorRT
version, GPU and precision (and batch profile); the pipeline's ``tensorrt``
backend (and ``auto``) then loads it. INT8 is calibrated on frames prepared
exactly as capture prepares them; its embeddings differ from FP32, so judge
a head on them before deploying it (``engine.precision: int8``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.factory import DEFAULT_ONNX_PATH
from engines.tensorrt_build import PRECISIONS, build_engine, profile_for
from pipeline.sources.decoding import calibration_frames, list_videos
from tools.cli import UsageError, run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.build_engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, default=DEFAULT_ONNX_PATH)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--max-batch", type=int, default=32, help="the largest batch the engine accepts (engine.max_batch_size)")
    p.add_argument("--calibrate", type=Path, help="INT8: a folder of videos to calibrate on")
    p.add_argument("--calibration-frames", type=int, default=200)
    p.add_argument("--rebuild", action="store_true", help="build even if the cache has it")
    args = p.parse_args(argv)
    if not args.onnx.is_file():
        raise UsageError(f"--onnx {args.onnx} does not exist (make models builds the default one)")
    if args.max_batch < 1:
        raise UsageError("--max-batch must be at least 1")
    calibration = None
    if args.precision == "int8":
        if args.calibrate is None:
            raise UsageError("--precision int8 needs --calibrate VIDEO_FOLDER")
        calibration = calibration_frames(list_videos(args.calibrate), args.calibration_frames)
    plan = build_engine(args.onnx, args.precision, profile_for(args.max_batch), calibration=calibration,
                        rebuild=args.rebuild)
    print(plan)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
