"""Train the temporal head (GRU, or the frame-only baseline) on cached step embeddings.

    python -m tools.train_head --features FEATURES_DIR --annotations ANN.txt --out HEAD.safetensors

MiniROAD's recipe: long windows cut from whole streams, the hidden state
zero at each window's start, AdamW, cross-entropy on every step. Videos are
split into train and validation by a seeded hash of their id; the checkpoint
kept is the one with the best validation mAP. The event detector's settings
are then chosen on the same validation streams (best start-event F1,
``tools.tune_events``) and frozen in the checkpoint. Test streams never
enter here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engines.backbone import EFFICIENTNET_LITE0
from engines.head_config import EVENTS_METADATA_KEY
from engines.temporal_head import HEAD_KINDS, HeadConfig, StreamState, TemporalHead, principal_components, save_head
from tools.evaluation.annotations import (
    BACKGROUND,
    SYNTH_ACTIONS_CLASSES,
    SYNTH_ACTIONS_MIRROR_PAIRS,
    ActionInstance,
    group_by_video,
    label_at,
    read_annotations,
)
from tools.training.features_cache import StepFeatures, load_feature_dir
from tools.evaluation.offline import score_steps
from pipeline.scores import StepScores
from tools.cli import UsageError, run
from tools.evaluation.map import evaluate


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "gru"
    epochs: int = 40
    window: int = 128
    batch_size: int = 16
    windows_per_epoch: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-2
    input_dropout: float = 0.5
    dropout: float = 0.3
    ema_decay: float = 0.0
    val_fraction: float = 0.15
    seed: int = 0
    hidden_size: int = 256
    num_layers: int = 1
    projection_dim: int = 256
    stats_dim: int | None = None  # the first N frame statistics (engines/spec.py); None: all the graph makes
    # Share of training windows played backwards with each class swapped for its mirror (approach <->
    # recede, ...): what reverses an action is its mirror, so direction, not look, must decide.
    reverse_prob: float = 0.0
    # Loss weight of the steps within edge_steps of a change of label (an action's first and last
    # steps, and the background right after it): where an online model is late, and where
    # per-frame mAP and start events lose most.
    edge_weight: float = 1.0
    edge_steps: int = 2
    embedding_components: int = 0  # 0: the whole embedding; K: its first K principal components


@dataclass(frozen=True)
class LabelledStream:
    video_id: str
    embedding: torch.Tensor  # [T, E]
    stats: torch.Tensor  # [T, L]
    labels: torch.Tensor  # [T] long
    times: np.ndarray


def _split_score(video_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _is_validation(video_id: str, fraction: float, seed: int) -> bool:
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


def fit_embedding_components(head: TemporalHead, streams: Sequence[LabelledStream]) -> None:
    """Set the head's embedding basis from the training streams (heads with embedding_components only)."""
    count = head.config.embedding_components
    if not count:
        return
    embedding = torch.cat([s.embedding for s in streams])
    unit = embedding / embedding.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    mean, basis = principal_components(unit, count)
    head.embedding_mean.copy_(mean)
    head.embedding_basis.copy_(basis)


def fit_standardisation(head: TemporalHead, streams: Sequence[LabelledStream]) -> None:
    """Set the head's input mean/std from the training streams, as the model will see them."""
    with torch.no_grad():
        inputs = []
        for s in streams:
            vectors = head.frame_vectors(s.embedding, s.stats)[None]
            inputs.append(head.inputs(vectors, head.initial_state(1))[0])
        x = torch.cat(inputs)
        head.input_mean.copy_(x.mean(dim=0))
        head.input_std.copy_(x.std(dim=0).clamp_min(1e-4))


def mirror_index(classes: Sequence[str]) -> torch.Tensor:
    """For each class, the class it becomes when time runs backwards (itself when unpaired)."""
    index = {c: i for i, c in enumerate(classes)}
    mapping = list(range(len(classes)))
    for a, b in SYNTH_ACTIONS_MIRROR_PAIRS:
        if a in index and b in index:
            mapping[index[a]], mapping[index[b]] = index[b], index[a]
    return torch.tensor(mapping, dtype=torch.long)


def _sample_windows(
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


EMA_WARMUP_STEPS = 24


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


def step_weights(labels: torch.Tensor, edge_weight: float, edge_steps: int) -> torch.Tensor:
    """[B, T] labels (-100: padding) -> [B, T] loss weights: 0 on padding, ``edge_weight`` on the steps
    within ``edge_steps`` after a change of label (counting the step that changes), 1 elsewhere."""
    real = labels != -100
    weights = real.to(torch.float32)
    if edge_weight == 1.0 or edge_steps < 1:
        return weights
    changed = torch.zeros_like(real)
    changed[:, 1:] = (labels[:, 1:] != labels[:, :-1]) & real[:, 1:] & real[:, :-1]
    near = changed.clone()
    for lag in range(1, edge_steps):
        near[:, lag:] |= changed[:, :-lag]
    return torch.where(near & real, torch.full_like(weights, edge_weight), weights)


def validation_metrics(head: TemporalHead, streams: Sequence[LabelledStream], annotations_paths: Sequence[Path]) -> dict:
    head.eval()
    steps = []
    classes = head.config.classes
    for s in streams:
        probs = score_steps(head, s.embedding.numpy(), s.stats.numpy())
        steps.extend(
            StepScores(s.video_id, float(t), dict(zip(classes, map(float, row)))) for t, row in zip(s.times, probs)
        )
    ids = {s.video_id for s in streams}
    instances = [i for i in read_all_annotations(annotations_paths) if i.video_id in ids]
    return evaluate(steps, instances, classes=classes)


def train(
    streams: Sequence[LabelledStream], annotations_paths: Sequence[Path], cfg: TrainConfig, step_rate: float,
    classes: Sequence[str] = SYNTH_ACTIONS_CLASSES, progress: bool = True,
) -> tuple[TemporalHead, dict]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    available = int(streams[0].stats.shape[1])
    stats_dim = cfg.stats_dim or available
    if not 0 < stats_dim <= available:
        raise UsageError(f"--stats-dim {stats_dim}: the features hold {available} frame statistics")
    streams = [replace(s, stats=s.stats[:, :stats_dim]) for s in streams]
    train_set, val_set = split_streams(streams, cfg.val_fraction, cfg.seed)
    if not train_set or not val_set:
        raise UsageError(
            f"need streams for both training and validation, got {len(train_set)} and {len(val_set)}: "
            "add videos or change --val-fraction"
        )
    head_config = HeadConfig(
        classes=tuple(classes),
        step_rate_hz=step_rate,
        backbone=replace(EFFICIENTNET_LITE0, stats_dim=stats_dim),
        kind=cfg.kind,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        projection_dim=cfg.projection_dim,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        ema_decay=cfg.ema_decay,
        embedding_components=cfg.embedding_components,
    )
    head = TemporalHead(head_config)
    mirror = mirror_index(classes)
    if cfg.reverse_prob > 0:
        if head_config.uses_ema:
            raise UsageError("--reverse-prob cannot be combined with --ema-decay (the EMA is built forwards)")
        if bool((mirror == torch.arange(len(classes))).all()):
            raise UsageError("--reverse-prob needs mirror pairs among the classes (approach/recede, enter/exit, "
                             "lights_on/lights_off): played backwards, the others would be mislabelled")
    fit_embedding_components(head, train_set)
    fit_standardisation(head, train_set)
    optimiser = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, cfg.windows_per_epoch // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")
    best: tuple[float, dict, dict] | None = None
    history: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc=f"training {cfg.kind}", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        total = 0.0
        for _ in range(steps_per_epoch):
            emb, stats, labels, state, _ = _sample_windows(train_set, head, cfg, rng, mirror)
            out = head.forward_sequence(emb, stats, state)
            per_step = loss_fn(out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1))
            weights = step_weights(labels, cfg.edge_weight, cfg.edge_steps).reshape(-1)
            loss = (per_step * weights).sum() / weights.sum().clamp_min(1e-6)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            optimiser.step()
            scheduler.step()
            total += loss.item()
        metrics = validation_metrics(head, val_set, annotations_paths)
        score = metrics["mAP"] if metrics["mAP"] is not None else -math.inf
        bar.set_postfix(loss=f"{total / steps_per_epoch:.3f}", val_mAP=f"{score:.3f}")
        history.append({"epoch": epoch, "loss": round(total / steps_per_epoch, 4), "val_mAP": metrics["mAP"],
                        "val_mirror": metrics["mirror_pair_accuracy"]})
        if best is None or score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in head.state_dict().items()}, {**metrics, "epoch": epoch})
    if best is None:
        raise UsageError("training ran no epoch: --epochs must be at least 1")
    head.load_state_dict(best[1])
    head.eval()
    events, event_figures = tune_event_settings(head, val_set, annotations_paths)
    summary = {
        "validation": best[2],
        "train_videos": len(train_set),
        "validation_videos": len(val_set),
        "history": history,
        "events": events,
        "events_validation": event_figures,
    }
    return head, summary


def tune_event_settings(head: TemporalHead, val_set: Sequence[LabelledStream],
                        annotations_paths: Sequence[Path]) -> tuple[dict, dict]:
    """The event detector's settings with the best start F1 on the validation streams (tools.tune_events)."""
    from tools.tune_events import ScoredStream, tune

    scored = [ScoredStream(s.video_id, s.times, score_steps(head, s.embedding.numpy(), s.stats.numpy()))
              for s in val_set]
    ids = {s.video_id for s in val_set}
    truth = [i for i in read_all_annotations(annotations_paths) if i.video_id in ids]
    return tune(scored, head.config.classes, truth)


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m tools.train_head", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, required=True, help="folder written by tools.extract_features")
    p.add_argument("--annotations", type=Path, nargs="+", required=True, help="THUMOS-style annotation file(s)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--kind", choices=HEAD_KINDS, default=defaults.kind)
    p.add_argument("--classes", nargs="+", metavar="ACTION",
                   help="action classes in output order (default: SynthActions' when the annotations use them, "
                        "else the annotations' class names sorted); background is always class 0")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--window", type=int, default=defaults.window, help="steps per training window")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--windows-per-epoch", type=int, default=defaults.windows_per_epoch)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    p.add_argument("--hidden-size", type=int, default=defaults.hidden_size)
    p.add_argument("--num-layers", type=int, default=defaults.num_layers, help="stacked GRU layers")
    p.add_argument("--dropout", type=float, default=defaults.dropout)
    p.add_argument("--input-dropout", type=float, default=defaults.input_dropout)
    p.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                   help="also feed the change against an EMA of past frames (0: off)")
    p.add_argument("--stats-dim", type=int, default=None,
                   help="use the first N frame statistics (default: all; 49 = the first group only)")
    p.add_argument("--reverse-prob", type=float, default=defaults.reverse_prob,
                   help="share of training windows played backwards with mirrored labels (SynthActions' pairs)")
    p.add_argument("--edge-weight", type=float, default=defaults.edge_weight,
                   help="loss weight of the first --edge-steps steps after each change of label (1: none)")
    p.add_argument("--edge-steps", type=int, default=defaults.edge_steps)
    p.add_argument("--embedding-components", type=int, default=defaults.embedding_components,
                   help="feed the head only the embedding's first K principal components over the training "
                        "streams (0: the whole embedding)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.epochs < 1 or args.window < 2 or args.batch_size < 1 or args.num_layers < 1:
        raise UsageError("--epochs, --batch-size and --num-layers must be at least 1 and --window at least 2")
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.threads:
        torch.set_num_threads(args.threads)
    features = load_feature_dir(args.features)
    step_rate = _step_rate_of(features)
    cfg = TrainConfig(
        kind=args.kind,
        epochs=args.epochs,
        window=args.window,
        batch_size=args.batch_size,
        windows_per_epoch=args.windows_per_epoch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=args.dropout,
        input_dropout=args.input_dropout,
        ema_decay=args.ema_decay,
        stats_dim=args.stats_dim,
        reverse_prob=args.reverse_prob,
        embedding_components=args.embedding_components,
        edge_weight=args.edge_weight,
        edge_steps=args.edge_steps,
    )
    classes = choose_classes(read_all_annotations(args.annotations), args.classes)
    streams = labelled_streams(features, args.annotations, classes)
    head, summary = train(streams, args.annotations, cfg, step_rate, classes=classes, progress=not args.quiet)
    summary["train_config"] = cfg.__dict__
    save_head(args.out, head, {"training": json.dumps(summary, sort_keys=True),
                               EVENTS_METADATA_KEY: json.dumps(summary["events"], sort_keys=True)})
    print(json.dumps({"checkpoint": str(args.out), **summary}, indent=2))
    return 0


def _step_rate_of(features: dict[str, StepFeatures]) -> float:
    rates = {json.loads(f.key)["step_rate"] for f in features.values()}
    if len(rates) != 1:
        raise UsageError(f"feature caches were extracted at different step rates {sorted(rates)}: use one rate")
    return float(rates.pop())


if __name__ == "__main__":
    sys.exit(run(main))
