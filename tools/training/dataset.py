"""The training data set: labelled streams of cached step embeddings, their seeded split into training
and validation, and the windows a training batch is cut from.

Videos are split into train and validation by a seeded hash of their id, so
the split is stable as videos are added. Windows are cut from whole streams,
each starting with its true previous frame as the head's state; with
``reverse_prob`` a window may be played backwards with each label its
mirror's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engines.temporal_head import StreamState, TemporalHead
from tools.cli import UsageError
from tools.evaluation.annotations import (
    BACKGROUND,
    SYNTH_ACTIONS_CLASSES,
    SYNTH_ACTIONS_MIRROR_PAIRS,
    ActionInstance,
    group_by_video,
    label_at,
    read_annotations,
)
from tools.training.config import TrainConfig
from tools.training.features_cache import StepFeatures

# Steps over which the EMA a window starts with is warmed up (heads with ema_decay only).
EMA_WARMUP_STEPS = 24


@dataclass(frozen=True)
class LabelledStream:
    """One video's steps with the class index of each (the head's classes)."""

    video_id: str
    embedding: torch.Tensor  # [T, E]
    stats: torch.Tensor  # [T, L]
    labels: torch.Tensor  # [T] long
    times: np.ndarray


def _split_score(video_id: str, seed: int) -> float:
    """A video's place in [0, 1) for the split: a seeded hash of its id."""
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _is_validation(video_id: str, fraction: float, seed: int) -> bool:
    """Whether the split puts the video in validation."""
    return _split_score(video_id, seed) < fraction


def split_streams(streams: Sequence["LabelledStream"], fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation) by a seeded hash of each video id: stable as videos are added.

    A small data set still gets one validation video (the lowest hash), so
    checkpoint selection never falls back to the training streams.
    """
    val = [s for s in streams if _is_validation(s.video_id, fraction, seed)]
    if not val and len(streams) >= 2:
        val = [min(streams, key=lambda s: _split_score(s.video_id, seed))]
    val_ids = {s.video_id for s in val}
    return [s for s in streams if s.video_id not in val_ids], val


def read_all_annotations(paths: Sequence[Path]) -> list[ActionInstance]:
    """The instances of every annotation file, in order."""
    return [inst for path in paths for inst in read_annotations(path)]


def choose_classes(instances: Sequence[ActionInstance], requested: Sequence[str] | None) -> tuple[str, ...]:
    """The head's classes: background first, then the actions (SynthActions' order when they fit it)."""
    if requested:
        if BACKGROUND in requested:
            raise UsageError(f"--classes lists actions only; '{BACKGROUND}' is always class 0")
        return (BACKGROUND, *requested)
    found = {inst.action for inst in instances}
    if found <= set(SYNTH_ACTIONS_CLASSES):
        return SYNTH_ACTIONS_CLASSES
    return (BACKGROUND, *sorted(found))


def labelled_streams(
    features: dict[str, StepFeatures], annotations_paths: Sequence[Path], classes: Sequence[str]
) -> list[LabelledStream]:
    """Every cached video with each step labelled by the annotations (background where none covers it)."""
    by_video = group_by_video(read_all_annotations(annotations_paths))
    annotations_path = " ".join(map(str, annotations_paths))
    if unknown := sorted({i.action for items in by_video.values() for i in items} - set(classes)):
        raise UsageError(f"{annotations_path}: classes {unknown} are not in the head's classes {list(classes)}")
    if not set(features) & set(by_video):
        raise UsageError(f"no video in the features folder has a line in {annotations_path}: wrong annotation file?")
    streams = []
    for video_id, feats in sorted(features.items()):
        labels = [classes.index(label_at(by_video.get(video_id, ()), float(t))) for t in feats.times]
        streams.append(
            LabelledStream(
                video_id=video_id,
                embedding=torch.from_numpy(feats.embedding),
                stats=torch.from_numpy(feats.stats),
                labels=torch.tensor(labels, dtype=torch.long),
                times=feats.times,
            )
        )
    return streams


def mirror_index(classes: Sequence[str]) -> torch.Tensor:
    """For each class, the class it becomes when time runs backwards (itself when unpaired)."""
    index = {c: i for i, c in enumerate(classes)}
    mapping = list(range(len(classes)))
    for a, b in SYNTH_ACTIONS_MIRROR_PAIRS:
        if a in index and b in index:
            mapping[index[a]], mapping[index[b]] = index[b], index[a]
    return torch.tensor(mapping, dtype=torch.long)


def sample_windows(
    streams: Sequence[LabelledStream], head: TemporalHead, cfg: TrainConfig, rng: np.random.Generator,
    mirror: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, StreamState, torch.Tensor]:
    """A batch of windows; each starts mid-stream with its true previous frame as state.

    With ``cfg.reverse_prob``, a window may be played backwards: its steps in reverse order, each label
    its mirror's, and the state it starts from the frame after the window (what precedes it backwards)."""
    picks = rng.integers(0, len(streams), size=cfg.batch_size)
    emb = torch.zeros(cfg.batch_size, cfg.window, streams[0].embedding.shape[1])
    stats = torch.zeros(cfg.batch_size, cfg.window, streams[0].stats.shape[1])
    labels = torch.full((cfg.batch_size, cfg.window), -100, dtype=torch.long)  # -100: ignored by the loss
    state = head.initial_state(cfg.batch_size)
    for row, idx in enumerate(picks):
        stream = streams[idx]
        length = len(stream.labels)
        start = int(rng.integers(0, max(1, length - cfg.window // 2)))
        stop = min(length, start + cfg.window)
        n = stop - start
        if mirror is not None and cfg.reverse_prob > 0 and rng.random() < cfg.reverse_prob:
            window = torch.arange(stop - 1, start - 1, -1)
            emb[row, :n], stats[row, :n] = stream.embedding[window], stream.stats[window]
            labels[row, :n] = mirror[stream.labels[window]]
            emb[row, n:], stats[row, n:] = stream.embedding[start], stream.stats[start]
            if stop < length:
                state.previous[row] = head.frame_vectors(stream.embedding[stop], stream.stats[stop])
                state.has_previous[row] = True
            continue
        emb[row, :n], stats[row, :n], labels[row, :n] = stream.embedding[start:stop], stream.stats[start:stop], stream.labels[start:stop]
        # Pad by repeating the last frame, so padded steps carry no fake change into real ones.
        emb[row, n:], stats[row, n:] = stream.embedding[stop - 1], stream.stats[stop - 1]
        if start > 0:
            state.previous[row] = _carried_state(head, stream, start)
            state.has_previous[row] = True
    return emb, stats, labels, state, picks


def _carried_state(head: TemporalHead, stream: LabelledStream, start: int) -> torch.Tensor:
    """The frame state a stream carries into step ``start`` (its EMA warmed up over recent steps)."""
    previous = head.frame_vectors(stream.embedding[start - 1], stream.stats[start - 1])
    if not head.config.uses_ema:
        return previous
    lo = max(0, start - EMA_WARMUP_STEPS)
    vectors = head.frame_vectors(stream.embedding[lo:start], stream.stats[lo:start])
    decay = head.config.ema_decay
    average = vectors[0]
    for v in vectors[1:]:
        average = decay * average + (1.0 - decay) * v
    return torch.cat([previous, average])


def step_rate_of(features: dict[str, StepFeatures]) -> float:
    """The step rate the feature caches were extracted at; they must share one."""
    rates = {json.loads(f.key)["step_rate"] for f in features.values()}
    if len(rates) != 1:
        raise UsageError(f"feature caches were extracted at different step rates {sorted(rates)}: use one rate")
    return float(rates.pop())


def keep_stats(streams: Sequence[LabelledStream], stats_dim: int | None) -> tuple[list[LabelledStream], int]:
    """The streams with only their first ``stats_dim`` frame statistics (all when None), and that number."""
    available = int(streams[0].stats.shape[1])
    kept = stats_dim or available
    if not 0 < kept <= available:
        raise UsageError(f"--stats-dim {kept}: the features hold {available} frame statistics")
    return [replace(s, stats=s.stats[:, :kept]) for s in streams], kept
