"""Per-video caches of step embeddings, so that training reruns do not re-embed video."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ActionPipeError

# Bump when sampling, frame preparation or the graph's outputs change: older caches are then stale.
EXTRACTION_REVISION = 4


class FeatureCacheError(ActionPipeError, ValueError):
    pass


@dataclass(frozen=True)
class StepFeatures:
    """One video's steps: the times they were sampled at and what the backbone made of them."""

    video_id: str
    times: np.ndarray  # float64 [T]
    embedding: np.ndarray  # float32 [T, E]
    stats: np.ndarray  # float32 [T, L]
    key: str  # what the cache was computed from; see cache_key


def cache_key(video_sha256: str, step_rate: float, backbone_id: str) -> str:
    return json.dumps(
        {"video": video_sha256, "step_rate": step_rate, "backbone": backbone_id, "revision": EXTRACTION_REVISION},
        sort_keys=True,
    )


def save_step_features(path: Path, features: StepFeatures) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(
        tmp,
        times=features.times,
        embedding=features.embedding,
        stats=features.stats,
        video_id=np.array(features.video_id),
        key=np.array(features.key),
    )
    tmp.replace(path)


def load_step_features(path: Path) -> StepFeatures:
    try:
        with np.load(path, allow_pickle=False) as data:
            return StepFeatures(
                video_id=str(data["video_id"]),
                times=data["times"],
                embedding=data["embedding"],
                stats=data["stats"],
                key=str(data["key"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise FeatureCacheError(f"{path}: unreadable feature cache ({exc}); delete it to recompute") from exc


def load_feature_dir(folder: Path) -> dict[str, StepFeatures]:
    if not folder.is_dir():
        raise FeatureCacheError(f"feature folder not found: {folder} (run tools.extract_features first)")
    items = {}
    for path in sorted(folder.glob("*.npz")):
        features = load_step_features(path)
        items[features.video_id] = features
    if not items:
        raise FeatureCacheError(f"no feature files (*.npz) in {folder}")
    return items
