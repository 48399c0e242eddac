"""The training loop of the temporal head (GRU, or the frame-only baseline) on labelled streams.

MiniROAD's recipe: long windows cut from whole streams, the hidden state
zero at each window's start, AdamW, cross-entropy on every step. The
checkpoint kept is the one with the best validation mAP. The event
detector's settings are then chosen on the same validation streams (best
start-event F1, :mod:`tools.training.events_tuning`). Test streams never
enter here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engines.temporal_head import HeadConfig, TemporalHead, principal_components
from pipeline.scores import StepScores
from tools.cli import UsageError
from tools.evaluation.map import evaluate
from tools.evaluation.offline import score_steps
from tools.training.config import TrainConfig
from tools.training.dataset import LabelledStream, mirror_index, read_all_annotations, sample_windows, split_streams
from tools.training.events_tuning import ScoredStream, tune


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
    """The head's per-step metrics (tools.evaluation.map) on ``streams``, each run from a fresh state."""
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
    streams: Sequence[LabelledStream], annotations_paths: Sequence[Path], head_config: HeadConfig, cfg: TrainConfig,
    progress: bool = True,
) -> tuple[TemporalHead, dict]:
    """The head ``head_config`` describes, trained on the streams' training split and chosen (epoch, event
    settings) on their validation split, and a summary of how it went. The streams carry as many frame
    statistics as its backbone."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classes = head_config.classes
    train_set, val_set = split_streams(streams, cfg.val_fraction, cfg.seed)
    if not train_set or not val_set:
        raise UsageError(
            f"need streams for both training and validation, got {len(train_set)} and {len(val_set)}: "
            "add videos or change --val-fraction"
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
    bar = tqdm(range(cfg.epochs), desc=f"training {head_config.kind}", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        total = 0.0
        for _ in range(steps_per_epoch):
            emb, stats, labels, state, _ = sample_windows(train_set, head, cfg, rng, mirror)
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
    """The event detector's settings with the best start F1 on the validation streams, and their figures."""
    scored = [ScoredStream(s.video_id, s.times, score_steps(head, s.embedding.numpy(), s.stats.numpy()))
              for s in val_set]
    ids = {s.video_id for s in val_set}
    truth = [i for i in read_all_annotations(annotations_paths) if i.video_id in ids]
    return tune(scored, head.config.classes, truth)
