"""How a head is trained: the training loop's settings (TrainConfig), beside the head's hyper-parameters.

The head's hyper-parameters (kind, sizes, dropout, EMA, embedding components)
are engines.head_config.HeadConfig's fields and are declared only there;
training builds a HeadConfig for the head it trains and records both in the
checkpoint.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from types import MappingProxyType

from engines.head_config import HeadConfig

# HeadConfig's fields that training chooses; the others (classes, step rate, backbone) come from the data.
HEAD_HYPERPARAMETERS: tuple[str, ...] = tuple(f.name for f in fields(HeadConfig) if f.default is not MISSING)
# Where train_head starts from other values than HeadConfig's own defaults (what a head built by hand gets):
# the dropout its command line has always defaulted to.
TRAINING_HEAD_DEFAULTS = MappingProxyType({"dropout": 0.3, "input_dropout": 0.5})


def head_defaults() -> dict[str, object]:
    """The head's hyper-parameters that train_head starts from: HeadConfig's defaults, but TRAINING_HEAD_DEFAULTS."""
    own = {f.name: f.default for f in fields(HeadConfig) if f.name in HEAD_HYPERPARAMETERS}
    return {**own, **TRAINING_HEAD_DEFAULTS}


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings; the head it trains is described by its HeadConfig."""

    # What it trains on: the first N frame statistics (engines/spec.py; None: all the graph makes), and the
    # share of videos held out for validation by a hash seeded with ``seed`` (which also seeds the loop).
    stats_dim: int | None = None
    val_fraction: float = 0.15
    seed: int = 0
    # The loop: epochs of windows (steps each) in batches, AdamW.
    epochs: int = 40
    window: int = 128
    batch_size: int = 16
    windows_per_epoch: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-2
    # Share of training windows played backwards with each class swapped for its mirror (approach <->
    # recede, ...): what reverses an action is its mirror, so direction, not look, must decide.
    reverse_prob: float = 0.0
    # Loss weight of the steps within edge_steps of a change of label (an action's first and last
    # steps, and the background right after it): where an online model is late, and where
    # per-frame mAP and start events lose most.
    edge_weight: float = 1.0
    edge_steps: int = 2

    def record(self, head: HeadConfig) -> dict:
        """The ``train_config`` of a checkpoint's training metadata: these settings and the trained head's
        hyper-parameters, in one flat record (as checkpoints have always carried them)."""
        return {**asdict(self), **{name: getattr(head, name) for name in HEAD_HYPERPARAMETERS}}
