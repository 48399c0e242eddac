"""Embed every video of a folder at the head's step rate, cached per video.

    python -m tools.extract_features --videos DIR --out FEATURES_DIR [--step-rate 4] [--engine onnxruntime]

Frames are sampled by timestamp exactly as the streaming pipeline samples
them. A video whose cache matches (same file content, step rate and backbone)
is skipped, so reruns cost only the new videos.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.factory import BACKENDS, PRECISIONS
from tools.cli import UsageError, run
from tools.training.extraction import extract_folder

DEFAULT_STEP_RATE = 4.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.extract_features", description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, nargs="+", required=True, help="folder(s) of videos (mp4, avi, ...)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the per-video .npz caches")
    parser.add_argument("--step-rate", type=float, default=DEFAULT_STEP_RATE, help="steps per second (default 4)")
    parser.add_argument("--engine", default="onnxruntime", choices=("auto",) + BACKENDS)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp16/int8 (GPU backends): embeddings as that engine makes them, to judge a head on")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: the backend's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.step_rate > 0:
        raise UsageError(f"--step-rate must be positive, got {args.step_rate}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    done, cached = extract_folder(
        args.videos, args.out, args.step_rate, args.engine, args.batch_size, args.threads, not args.quiet,
        args.precision,
    )
    print(f"embedded {done} videos, {cached} already cached, into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
