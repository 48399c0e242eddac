"""The temporal head: streaming equals offline, checkpoints carry their metadata and load without pickle."""

from __future__ import annotations

import json

import pytest
import torch

from engines.backbone import EFFICIENTNET_LITE0
from engines.temporal_head import CheckpointError, HeadConfig, TemporalHead, load_head, save_head
from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES

STEP_ATOL = 1e-6


def _head(kind: str = "gru", seed: int = 0, ema_decay: float = 0.0) -> TemporalHead:
    torch.manual_seed(seed)
    head = TemporalHead(
        HeadConfig(classes=SYNTH_ACTIONS_CLASSES, step_rate_hz=4.0, backbone=EFFICIENTNET_LITE0, kind=kind, ema_decay=ema_decay)
    )
    # Non-trivial standardisation, so a feature computed differently online would show.
    head.input_mean.normal_(0, 0.1)
    head.input_std.uniform_(0.5, 2.0)
    return head.eval()


def _sequence(batch: int, steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.rand(batch, steps, EFFICIENTNET_LITE0.embedding_dim, generator=g) * 3
    stats = torch.rand(batch, steps, EFFICIENTNET_LITE0.stats_dim, generator=g)
    return emb, stats


@pytest.mark.parametrize("kind, ema_decay", [("gru", 0.0), ("gru", 0.7), ("frame_only", 0.0)])
def test_stepping_with_carried_state_equals_running_the_whole_sequence(kind, ema_decay):
    head = _head(kind, ema_decay=ema_decay)
    emb, stats = _sequence(3, 40)
    with torch.no_grad():
        offline = head.forward_sequence(emb, stats).logits.softmax(-1)
    state = head.initial_state(3)
    online = []
    for t in range(emb.shape[1]):
        probs, state = head.step(emb[:, t], stats[:, t], state)
        online.append(probs)
    torch.testing.assert_close(torch.stack(online, dim=1), offline, atol=STEP_ATOL, rtol=0)


@pytest.mark.parametrize("ema_decay", [0.0, 0.7])
def test_chunks_of_any_length_with_carried_state_equal_one_pass(ema_decay):
    head = _head(ema_decay=ema_decay)
    emb, stats = _sequence(2, 37, seed=5)
    with torch.no_grad():
        whole = head.forward_sequence(emb, stats).logits
        state, parts = None, []
        for lo, hi in [(0, 1), (1, 10), (10, 11), (11, 37)]:
            out = head.forward_sequence(emb[:, lo:hi], stats[:, lo:hi], state)
            parts.append(out.logits)
            state = out.state
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=STEP_ATOL, rtol=0)


def test_state_matters_for_the_gru_so_the_equivalence_test_can_fail():
    """Dropping the carried state changes the scores; a broken carry would be caught."""
    head = _head()
    emb, stats = _sequence(1, 20, seed=9)
    with torch.no_grad():
        carried = head.forward_sequence(emb, stats).logits[:, 10:]
        fresh = head.forward_sequence(emb[:, 10:], stats[:, 10:]).logits
    assert (carried - fresh).abs().max() > 1e-3


def test_streams_in_one_batch_do_not_leak_into_each_other():
    head = _head()
    emb, stats = _sequence(4, 15, seed=2)
    with torch.no_grad():
        together = head.forward_sequence(emb, stats).logits
        alone = torch.cat([head.forward_sequence(emb[i : i + 1], stats[i : i + 1]).logits for i in range(4)])
    torch.testing.assert_close(together, alone, atol=STEP_ATOL, rtol=0)


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path):
    head = _head()
    path = tmp_path / "head.safetensors"
    save_head(path, head, {"training": json.dumps({"note": "unit test"})})
    loaded, metadata = load_head(path)
    assert loaded.config == head.config
    assert loaded.config.classes == SYNTH_ACTIONS_CLASSES
    assert loaded.config.step_rate_hz == 4.0
    assert loaded.config.backbone == EFFICIENTNET_LITE0
    assert json.loads(metadata["training"]) == {"note": "unit test"}
    emb, stats = _sequence(1, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_sequence(emb, stats).logits, head.forward_sequence(emb, stats).logits)


def test_checkpoint_file_is_safetensors_not_pickle(tmp_path):
    path = tmp_path / "head.safetensors"
    save_head(path, _head())
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["format"].startswith("streaming-action-head/")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert tensors and all(set(v) == {"dtype", "shape", "data_offsets"} for v in tensors.values())


def test_missing_and_corrupt_checkpoints_fail_with_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_head(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_head(bad)


def test_checkpoint_whose_weights_disagree_with_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    head = _head()
    tensors = {k: v.contiguous() for k, v in head.state_dict().items()}
    tensors["classifier.weight"] = tensors["classifier.weight"][:3].contiguous()
    path = tmp_path / "mismatch.safetensors"
    save_file(tensors, str(path), metadata=head.config.to_metadata())
    with pytest.raises(CheckpointError, match="do not match"):
        load_head(path)


def test_shipped_demo_models_load_and_describe_themselves():
    from tests.conftest import REPO_ROOT

    for name, kind in [("synthactions_gru", "gru"), ("synthactions_frame_only", "frame_only")]:
        head, metadata = load_head(REPO_ROOT / "models" / f"{name}.safetensors")
        assert head.config.kind == kind
        assert head.config.classes == SYNTH_ACTIONS_CLASSES
        backbone = head.config.backbone
        # The graph's frame statistics may outgrow what a head uses: it takes the first stats_dim.
        assert (backbone.name, backbone.embedding_dim) == (EFFICIENTNET_LITE0.name, EFFICIENTNET_LITE0.embedding_dim)
        assert backbone.stats_dim <= EFFICIENTNET_LITE0.stats_dim
        assert "training" in metadata


def test_a_head_trained_on_the_first_stats_takes_only_those_from_a_newer_graph():
    from dataclasses import replace

    from engines.spec import STATS_V1_DIM

    torch.manual_seed(3)
    head = TemporalHead(HeadConfig(classes=SYNTH_ACTIONS_CLASSES, step_rate_hz=4.0,
                                   backbone=replace(EFFICIENTNET_LITE0, stats_dim=STATS_V1_DIM))).eval()
    emb, stats = _sequence(2, 12, seed=9)
    assert stats.shape[-1] > STATS_V1_DIM
    with torch.no_grad():
        full = head.forward_sequence(emb, stats).logits
        prefix = head.forward_sequence(emb, stats[..., :STATS_V1_DIM]).logits
        changed = stats.clone()
        changed[..., STATS_V1_DIM:] = 99.0  # what it does not use cannot change its answer
        ignored = head.forward_sequence(emb, changed).logits
    torch.testing.assert_close(full, prefix, atol=0, rtol=0)
    torch.testing.assert_close(full, ignored, atol=0, rtol=0)


def _components_head(count: int = 8, seed: int = 4) -> TemporalHead:
    torch.manual_seed(seed)
    head = TemporalHead(HeadConfig(classes=SYNTH_ACTIONS_CLASSES, step_rate_hz=4.0, backbone=EFFICIENTNET_LITE0,
                                   embedding_components=count))
    head.embedding_mean.normal_(0, 0.01)
    head.embedding_basis.normal_(0, 0.05)
    head.input_mean.normal_(0, 0.1)
    head.input_std.uniform_(0.5, 2.0)
    return head.eval()


def test_a_head_on_embedding_components_streams_like_it_runs_offline_and_round_trips(tmp_path):
    head = _components_head()
    assert head.config.frame_vector_dim == 8 + EFFICIENTNET_LITE0.stats_dim + 1
    emb, stats = _sequence(2, 25, seed=11)
    with torch.no_grad():
        offline = head.forward_sequence(emb, stats).logits.softmax(-1)
    state, online = head.initial_state(2), []
    for t in range(emb.shape[1]):
        probs, state = head.step(emb[:, t], stats[:, t], state)
        online.append(probs)
    torch.testing.assert_close(torch.stack(online, dim=1), offline, atol=STEP_ATOL, rtol=0)

    path = tmp_path / "components.safetensors"
    save_head(path, head)
    loaded, _ = load_head(path)
    assert loaded.config.embedding_components == 8
    torch.testing.assert_close(loaded.embedding_basis, head.embedding_basis, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_sequence(emb, stats).logits.softmax(-1), offline, atol=0, rtol=0)


def test_a_head_on_embedding_components_sees_the_embedding_only_through_its_basis():
    head = _components_head(count=2)
    emb, stats = _sequence(1, 1, seed=12)
    unit = emb[0, 0] / emb[0, 0].norm()
    # A turn of the embedding away from the basis (and from itself) leaves the components still,
    # up to the renormalisation (second order); a turn of the same size along the basis moves them.
    q, _ = torch.linalg.qr(torch.cat([head.embedding_basis, unit[:, None]], dim=1))
    away = torch.randn(EFFICIENTNET_LITE0.embedding_dim, generator=torch.Generator().manual_seed(3))
    away -= q @ (q.T @ away)
    along = q[:, 0] - unit * (unit @ q[:, 0])

    def components(direction: torch.Tensor) -> torch.Tensor:
        turned = (unit + 1e-2 * direction / direction.norm()) * emb[0, 0].norm()
        return head.frame_vectors(turned[None], stats[0])[0, :2]

    with torch.no_grad():
        base = head.frame_vectors(emb[0], stats[0])[0, :2]
        assert (components(along) - base).abs().max() > 50 * (components(away) - base).abs().max()


def test_principal_components_find_the_directions_of_most_variance_deterministically():
    from engines.temporal_head import principal_components

    g = torch.Generator().manual_seed(0)
    dim = 20
    first, second = torch.zeros(dim), torch.zeros(dim)
    first[3], second[7] = 1.0, 1.0
    x = (torch.randn(500, 1, generator=g) * 5 * first + torch.randn(500, 1, generator=g) * 2 * second
         + torch.randn(500, dim, generator=g) * 0.1 + 4.0)
    mean, basis = principal_components(x, 2)
    torch.testing.assert_close(mean, x.mean(dim=0), atol=1e-5, rtol=0)
    assert basis.shape == (dim, 2)
    torch.testing.assert_close(basis.T @ basis, torch.eye(2), atol=1e-5, rtol=0)
    assert basis[3, 0] > 0.99 and basis[7, 1] > 0.99  # ordered by variance, signs fixed positive
    again_mean, again_basis = principal_components(x.clone(), 2)
    assert torch.equal(again_basis, basis) and torch.equal(again_mean, mean)


def test_embedding_components_outside_the_embedding_are_refused():
    for count in (-1, EFFICIENTNET_LITE0.embedding_dim + 1):
        with pytest.raises(CheckpointError, match="embedding_components"):
            HeadConfig(classes=SYNTH_ACTIONS_CLASSES, step_rate_hz=4.0, backbone=EFFICIENTNET_LITE0,
                       embedding_components=count)


def test_a_checkpoint_written_before_embedding_components_existed_loads_with_the_whole_embedding():
    metadata = _head().config.to_metadata()
    data = json.loads(metadata["head"])
    del data["embedding_components"]
    metadata["head"] = json.dumps(data)
    config = HeadConfig.from_metadata(metadata, "old.safetensors")
    assert config.embedding_components == 0
    assert config.frame_vector_dim == EFFICIENTNET_LITE0.embedding_dim + EFFICIENTNET_LITE0.stats_dim + 1
