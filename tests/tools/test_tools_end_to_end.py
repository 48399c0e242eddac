"""The ML engineer's tool chain, run as commands on a small rendered data set.

make_synthactions -> extract_features (cached) -> train_head -> score_offline
(from video, and from the cache) -> evaluate. Tiny sizes keep it to seconds;
what is checked is behaviour, not model quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.backbone import EFFICIENTNET_LITE0
from pipeline.scores import read_scores
from tests.conftest import REPO_ROOT
from tools.training.features_cache import load_feature_dir


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sa") / "data"
    _run("tools.make_synthactions", "--out", str(out), "--count", "6", "--seed", "31",
         "--size", "320x240", "--fps", "10", "--duration-range", "16", "20", "--quiet")
    return out


@pytest.fixture(scope="module")
def features(dataset) -> Path:
    out = dataset / "features"
    _run("tools.extract_features", "--videos", str(dataset / "videos"), "--out", str(out), "--quiet")
    return out


def test_extracted_features_are_sampled_at_the_step_rate(dataset, features):
    cached = load_feature_dir(features)
    assert len(cached) == 6
    for item in cached.values():
        # 10 fps sampled to 4 steps/s: each step is the first frame at or after k / 4 s.
        expected = np.ceil(np.arange(len(item.times)) * 0.25 * 10 - 1e-6) / 10
        np.testing.assert_allclose(item.times, expected, atol=1e-9)
        assert item.times[-1] > 15.0
        assert item.embedding.shape == (len(item.times), EFFICIENTNET_LITE0.embedding_dim)
        assert item.stats.shape == (len(item.times), EFFICIENTNET_LITE0.stats_dim)


def test_rerunning_extraction_uses_the_cache(dataset, features):
    before = {p.name: p.stat().st_mtime_ns for p in features.glob("*.npz")}
    proc = _run("tools.extract_features", "--videos", str(dataset / "videos"), "--out", str(features), "--quiet")
    assert "embedded 0 videos, 6 already cached" in proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in features.glob("*.npz")} == before


@pytest.fixture(scope="module")
def checkpoint(dataset, features) -> Path:
    out = dataset / "head.safetensors"
    proc = _run("tools.train_head", "--features", str(features), "--annotations", str(dataset / "annotations.txt"),
                "--out", str(out), "--epochs", "2", "--windows-per-epoch", "32", "--window", "32",
                "--val-fraction", "0.34", "--embedding-components", "4", "--quiet")
    summary = json.loads(proc.stdout)
    assert summary["train_videos"] + summary["validation_videos"] == 6
    assert summary["validation_videos"] >= 1
    return out


def test_a_head_trained_on_embedding_components_carries_the_basis_fitted_on_its_training_videos(features, checkpoint):
    import torch

    from engines.temporal_head import load_head, principal_components
    from tools.training.dataset import split_streams

    head, metadata = load_head(checkpoint)
    assert head.config.embedding_components == 4
    assert json.loads(metadata["training"])["train_config"]["embedding_components"] == 4
    # The basis is the principal components of the training split's unit embeddings, not the validation's.
    summary = json.loads(metadata["training"])
    items = load_feature_dir(features)
    train, _ = split_streams([_Named(v) for v in items], summary["train_config"]["val_fraction"], 0)
    embedding = torch.cat([torch.from_numpy(items[s.video_id].embedding) for s in train])
    mean, basis = principal_components(embedding / embedding.norm(dim=-1, keepdim=True), 4)
    torch.testing.assert_close(head.embedding_mean, mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(head.embedding_basis, basis, atol=1e-4, rtol=0)


def test_tune_events_on_the_heads_own_validation_split_freezes_its_choice(dataset, features, checkpoint, tmp_path):
    import shutil

    from engines.head_config import read_head_events
    from engines.temporal_head import load_head
    from tools.evaluation.annotations import read_annotations
    from tools.training.dataset import split_streams

    tuned = tmp_path / "tuned.safetensors"
    shutil.copy(checkpoint, tuned)
    proc = _run("tools.tune_events", "--model", str(tuned), "--features", str(features),
                "--annotations", str(dataset / "annotations.txt"), "--validation-split", "--write")
    report = json.loads(proc.stdout)
    _, metadata = load_head(checkpoint)
    _, held_out = split_streams([_Named(v) for v in load_feature_dir(features)],
                                json.loads(metadata["training"])["train_config"]["val_fraction"], 0)
    held_out_ids = {s.video_id for s in held_out}
    assert 1 <= len(held_out_ids) < 6
    truth = read_annotations(dataset / "annotations.txt")
    # Only the held-out streams' starts are counted, not the training streams'.
    assert report["validation"]["true_starts"] == sum(i.video_id in held_out_ids for i in truth)
    assert read_head_events(tuned) == report["events"]
    assert load_head(tuned)[1]["training"] == metadata["training"]


def test_tune_events_validation_split_needs_a_training_record(dataset, features, tmp_path):
    from engines.temporal_head import load_head, save_head
    from tests.support.runs import MODEL

    head, _ = load_head(MODEL)
    bare = tmp_path / "bare.safetensors"
    save_head(bare, head)
    proc = _run("tools.tune_events", "--model", str(bare), "--features", str(features),
                "--annotations", str(dataset / "annotations.txt"), "--validation-split", check=False)
    assert proc.returncode == 2
    assert "carries no training record" in proc.stderr and str(bare) in proc.stderr


class _Named:
    def __init__(self, video_id: str) -> None:
        self.video_id = video_id


def test_offline_scores_from_video_equal_scores_from_the_cache(dataset, features, checkpoint, tmp_path):
    from_video, from_cache = tmp_path / "video.jsonl", tmp_path / "cache.jsonl"
    _run("tools.score_offline", "--model", str(checkpoint), "--videos", str(dataset / "videos"), "--out", str(from_video), "--quiet")
    _run("tools.score_offline", "--model", str(checkpoint), "--features", str(features), "--out", str(from_cache), "--quiet")
    a, b = read_scores(from_video), read_scores(from_cache)
    assert [(s.stream, s.t) for s in a] == [(s.stream, s.t) for s in b]
    diff = max(abs(x.scores[c] - y.scores[c]) for x, y in zip(a, b) for c in x.scores)
    assert diff < 1e-5
    # Every step's probabilities form a distribution over the model's classes.
    assert all(abs(sum(s.scores.values()) - 1.0) < 1e-4 for s in a)

    proc = _run("tools.evaluate", "--scores", str(from_video), "--annotations", str(dataset / "annotations.txt"))
    metrics = json.loads(proc.stdout)
    assert metrics["num_streams"] == 6 and metrics["num_steps"] == len(a)
    assert 0.0 <= metrics["mAP"] <= 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["tools.extract_features", "--videos", "/nonexistent/dir", "--out", "/tmp/x"], "/nonexistent/dir"),
        (["tools.train_head", "--features", "/nonexistent/f", "--annotations", "a.txt", "--out", "x.safetensors"], "/nonexistent/f"),
        (["tools.score_offline", "--model", "/nonexistent/m.safetensors", "--videos", ".", "--out", "/tmp/s.jsonl"], "/nonexistent/m.safetensors"),
        (["tools.extract_features", "--videos", ".", "--out", "/tmp/x", "--step-rate", "0"], "--step-rate"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(args, message):
    proc = _run(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_scoring_a_file_that_is_not_a_video_names_it(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"definitely not video")
    proc = _run("tools.score_offline", "--model", str(REPO_ROOT / "models" / "synthactions_gru.safetensors"),
                "--videos", str(bogus), "--out", str(tmp_path / "s.jsonl"), check=False)
    assert proc.returncode == 2
    assert "clip.mp4" in proc.stderr and "Traceback" not in proc.stderr


def test_validation_split_is_stable_and_never_empty():
    from types import SimpleNamespace

    from tools.training.dataset import split_streams

    few = [SimpleNamespace(video_id=f"v{i}") for i in range(3)]
    train, val = split_streams(few, fraction=0.15, seed=0)
    assert len(val) == 1 and len(train) == 2
    many = [SimpleNamespace(video_id=f"v{i}") for i in range(400)]
    train, val = split_streams(many, fraction=0.15, seed=0)
    assert 30 <= len(val) <= 90
    # Adding videos never moves an existing one between the splits.
    _, val_more = split_streams(many + [SimpleNamespace(video_id=f"w{i}") for i in range(50)], fraction=0.15, seed=0)
    assert {v.video_id for v in val} <= {v.video_id for v in val_more}


def test_training_on_your_own_classes(dataset, features, tmp_path):
    """An ML engineer's own vocabulary: class names come from their annotations, not SynthActions."""
    from engines.temporal_head import load_head

    renamed = {"approach": "forklift_in", "recede": "forklift_out", "enter": "person_in", "exit": "person_out",
               "lights_on": "door_open", "lights_off": "door_close"}
    lines = (dataset / "annotations.txt").read_text().splitlines()
    own = tmp_path / "own.txt"
    own.write_text("".join(f"{v} {renamed[c]} {s} {e}\n" for v, c, s, e in (line.split() for line in lines)))
    head_path = tmp_path / "own.safetensors"
    _run("tools.train_head", "--features", str(features), "--annotations", str(own), "--out", str(head_path),
         "--epochs", "1", "--windows-per-epoch", "16", "--window", "32", "--quiet")
    head, _ = load_head(head_path)
    assert head.config.classes == ("background", *sorted(renamed.values()))
    scores = tmp_path / "own.jsonl"
    _run("tools.score_offline", "--model", str(head_path), "--features", str(features), "--out", str(scores), "--quiet")
    metrics = json.loads(_run("tools.evaluate", "--scores", str(scores), "--annotations", str(own)).stdout)
    assert set(metrics["per_class_AP"]) == set(renamed.values())
    assert metrics["mirror_pair_accuracy"] is None  # no SynthActions pairs in this vocabulary


def test_a_window_played_backwards_has_its_steps_reversed_and_each_label_mirrored():
    import torch

    from engines.temporal_head import HeadConfig, TemporalHead, frame_vectors
    from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES
    from tools.training.config import TrainConfig
    from tools.training.dataset import LabelledStream, mirror_index, sample_windows

    classes = SYNTH_ACTIONS_CLASSES
    mirror = mirror_index(classes)
    assert [classes[i] for i in mirror] == ["background", "recede", "approach", "exit", "enter", "lights_off",
                                            "lights_on"]
    steps = 40
    embedding = torch.arange(steps, dtype=torch.float32)[:, None].repeat(1, 1280) + 1.0
    stats = torch.zeros(steps, EFFICIENTNET_LITE0.stats_dim)
    labels = torch.tensor([1] * 10 + [0] * 10 + [3] * 10 + [5] * 10)
    stream = LabelledStream("v", embedding, stats, labels, np.arange(steps) * 0.25)
    head = TemporalHead(HeadConfig(classes=classes, step_rate_hz=4.0, backbone=EFFICIENTNET_LITE0))
    cfg = TrainConfig(window=16, batch_size=64, reverse_prob=0.5)
    emb, _, got, state, _ = sample_windows([stream], head, cfg, np.random.default_rng(0), mirror)
    backwards = forwards = 0
    for row in range(cfg.batch_size):
        order = emb[row, :, 0] - 1.0  # the step index each position holds
        n = int((got[row] != -100).sum())
        if n > 1 and order[1] < order[0]:
            backwards += 1
            steps_held = order[:n].long()
            assert torch.equal(steps_held, torch.arange(int(steps_held[0]), int(steps_held[0]) - n, -1))
            assert torch.equal(got[row, :n], mirror[labels[steps_held]])
            after = int(steps_held[0]) + 1  # backwards, the window starts from the step after it
            if after < steps:
                assert state.has_previous[row]
                assert torch.equal(state.previous[row], frame_vectors(embedding[after], stats[after]))
        elif n > 1:
            forwards += 1
            assert torch.equal(got[row, :n], labels[order[:n].long()])
    assert backwards > 10 and forwards > 10


def test_edge_weights_fall_on_the_steps_right_after_each_change_of_label_and_never_on_padding():
    import torch

    from tools.training.loop import step_weights

    labels = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0, 0, -100, -100],
                           [2, 2, 2, 0, 5, 5, 5, 5, 5, 5, 5]])
    weights = step_weights(labels, 3.0, 2)
    assert weights.tolist() == [[1, 1, 3, 3, 1, 1, 3, 3, 1, 0, 0],
                                [1, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1]]
    # Weight 1 is plain cross-entropy over the real steps.
    assert step_weights(labels, 1.0, 2).tolist() == (labels != -100).float().tolist()
    assert step_weights(labels, 3.0, 1)[0].tolist() == [1, 1, 3, 1, 1, 1, 3, 1, 1, 0, 0]
