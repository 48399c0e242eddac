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

from tqdm import tqdm

from engines.spec import file_sha256
from engines.factory import BACKENDS, PRECISIONS, create_engine
from tools.training.features_cache import (
    FeatureCacheError,
    StepFeatures,
    cache_key,
    load_step_features,
    save_step_features,
)
from tools.evaluation.offline import embed_video
from pipeline.sources.decoding import list_videos
from tools.cli import UsageError, run

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


def _is_current(target: Path, key: str) -> bool:
    if not target.exists():
        return False
    try:
        return load_step_features(target).key == key
    except FeatureCacheError as exc:
        print(f"warning: {exc}; recomputing it", file=sys.stderr)
        return False


def extract_folder(
    videos: Sequence[Path], out: Path, step_rate: float, engine_name: str, batch_size: int, threads: int, progress: bool,
    precision: str = "fp32",
) -> tuple[int, int]:
    """Returns (videos embedded, videos already cached)."""
    paths = [path for folder in videos for path in list_videos(folder)]
    if not paths:
        raise UsageError(f"--videos {' '.join(map(str, videos))}: no video files found")
    stems = [p.stem for p in paths]
    if dupes := sorted({s for s in stems if stems.count(s) > 1}):
        raise UsageError(f"--videos: several files share the video id(s) {dupes[:5]}; ids must be unique")
    engine = create_engine(engine_name, threads=threads, precision=precision, max_batch_size=batch_size)
    # Reduced-precision embeddings differ from FP32 ones: they must not share a cache entry.
    backbone_id = engine.spec.name if precision == "fp32" else f"{engine.spec.name}@{precision}"
    done = cached = 0
    try:
        for path in tqdm(paths, desc="embedding", unit="video", disable=not progress):
            key = cache_key(file_sha256(path), step_rate, backbone_id)
            target = out / f"{path.stem}.npz"
            if _is_current(target, key):
                cached += 1
                continue
            steps = embed_video(path, engine, step_rate, batch_size)
            save_step_features(
                target,
                StepFeatures(video_id=path.stem, times=steps.times, embedding=steps.embedding, stats=steps.stats, key=key),
            )
            done += 1
    finally:
        engine.close()
    return done, cached


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
