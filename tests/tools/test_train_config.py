"""tools.training.config: the head's hyper-parameters are HeadConfig's; checkpoints record the same settings as ever."""

from __future__ import annotations

import json
from dataclasses import fields

from engines.head_config import HeadConfig, read_checkpoint_metadata, read_head_config
from tests.support.runs import MODEL
from tools.training.config import HEAD_HYPERPARAMETERS, TrainConfig, head_defaults


def test_training_records_the_keys_the_shipped_checkpoint_carries():
    shipped = json.loads(read_checkpoint_metadata(MODEL)["training"])["train_config"]
    record = TrainConfig().record(read_head_config(MODEL))
    assert set(record) == set(shipped)
    assert {k: record[k] for k in HEAD_HYPERPARAMETERS} == {k: shipped[k] for k in HEAD_HYPERPARAMETERS}


def test_train_head_starts_from_head_configs_defaults_but_for_its_dropout():
    own = {f.name: f.default for f in fields(HeadConfig) if f.name in HEAD_HYPERPARAMETERS}
    assert set(own) == {"kind", "projection_dim", "hidden_size", "num_layers", "dropout", "input_dropout",
                        "ema_decay", "embedding_components"}
    assert head_defaults() == {**own, "dropout": 0.3, "input_dropout": 0.5}
    assert not set(HEAD_HYPERPARAMETERS) & {f.name for f in fields(TrainConfig)}  # declared once, in HeadConfig
