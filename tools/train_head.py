"""Train the temporal head (GRU, or the frame-only baseline) on cached step embeddings.

    python -m tools.train_head --features FEATURES_DIR --annotations ANN.txt --out HEAD.safetensors

MiniROAD's recipe: long windows cut from whole streams, the hidden state
zero at each window's start, AdamW, cross-entropy on every step. Videos are
split into train and validation by a seeded hash of their id; the checkpoint
kept is the one with the best validation mAP. The event detector's settings
are then chosen on the same validation streams (best start-event F1,
``tools.tune_events``) and frozen in the checkpoint. Test streams never
enter here. The loop: tools.training.loop.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from engines.backbone import EFFICIENTNET_LITE0
from engines.head_config import EVENTS_METADATA_KEY
from engines.temporal_head import HEAD_KINDS, HeadConfig, save_head
from tools.cli import UsageError, run
from tools.training.config import TrainConfig, head_defaults
from tools.training.dataset import choose_classes, keep_stats, labelled_streams, read_all_annotations, step_rate_of
from tools.training.features_cache import load_feature_dir
from tools.training.loop import train


def _parser() -> argparse.ArgumentParser:
    defaults, head = TrainConfig(), head_defaults()
    p = argparse.ArgumentParser(prog="python -m tools.train_head", description=__doc__.split("\n\n")[0])
    p.add_argument("--features", type=Path, required=True, help="folder written by tools.extract_features")
    p.add_argument("--annotations", type=Path, nargs="+", required=True, help="THUMOS-style annotation file(s)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--kind", choices=HEAD_KINDS, default=head["kind"])
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
    p.add_argument("--hidden-size", type=int, default=head["hidden_size"])
    p.add_argument("--num-layers", type=int, default=head["num_layers"], help="stacked GRU layers")
    p.add_argument("--dropout", type=float, default=head["dropout"])
    p.add_argument("--input-dropout", type=float, default=head["input_dropout"])
    p.add_argument("--ema-decay", type=float, default=head["ema_decay"],
                   help="also feed the change against an EMA of past frames (0: off)")
    p.add_argument("--stats-dim", type=int, default=None,
                   help="use the first N frame statistics (default: all; 49 = the first group only)")
    p.add_argument("--reverse-prob", type=float, default=defaults.reverse_prob,
                   help="share of training windows played backwards with mirrored labels (SynthActions' pairs)")
    p.add_argument("--edge-weight", type=float, default=defaults.edge_weight,
                   help="loss weight of the first --edge-steps steps after each change of label (1: none)")
    p.add_argument("--edge-steps", type=int, default=defaults.edge_steps)
    p.add_argument("--embedding-components", type=int, default=head["embedding_components"],
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
    step_rate = step_rate_of(features)
    cfg = TrainConfig(
        epochs=args.epochs,
        window=args.window,
        batch_size=args.batch_size,
        windows_per_epoch=args.windows_per_epoch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        seed=args.seed,
        stats_dim=args.stats_dim,
        reverse_prob=args.reverse_prob,
        edge_weight=args.edge_weight,
        edge_steps=args.edge_steps,
    )
    classes = choose_classes(read_all_annotations(args.annotations), args.classes)
    streams, stats_dim = keep_stats(labelled_streams(features, args.annotations, classes), cfg.stats_dim)
    head_config = HeadConfig(
        classes=tuple(classes),
        step_rate_hz=step_rate,
        backbone=replace(EFFICIENTNET_LITE0, stats_dim=stats_dim),
        kind=args.kind,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=args.dropout,
        input_dropout=args.input_dropout,
        ema_decay=args.ema_decay,
        embedding_components=args.embedding_components,
    )
    head, summary = train(streams, args.annotations, head_config, cfg, progress=not args.quiet)
    summary["train_config"] = cfg.record(head_config)
    save_head(args.out, head, {"training": json.dumps(summary, sort_keys=True),
                               EVENTS_METADATA_KEY: json.dumps(summary["events"], sort_keys=True)})
    print(json.dumps({"checkpoint": str(args.out), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
