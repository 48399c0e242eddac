"""Embedding videos into per-video feature caches at a step rate (``python -m tools.extract_features``).

Frames are sampled by timestamp exactly as the streaming pipeline samples
them. A video whose cache matches (same file content, step rate and backbone)
is skipped, so reruns cost only the new videos.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from engines.factory import create_engine
from engines.spec import file_sha256
from pipeline.sources.decoding import list_videos
from tools.cli import UsageError
from tools.evaluation.offline import embed_video
from tools.training.features_cache import (
    FeatureCacheError,
    StepFeatures,
    cache_key,
    load_step_features,
    save_step_features,
)


def _is_current(target: Path, key: str) -> bool:
    """Whether ``target`` is a readable cache made from ``key``; an unreadable one is recomputed (and said so)."""
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
    """Embed every video of the ``videos`` folders into ``out``: (videos embedded, videos already cached)."""
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
