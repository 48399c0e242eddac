"""The snapshot stores, the decision to restore (clock passed in), the identities, and the ``state`` section."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from engines.spec import EFFICIENTNET_LITE0, file_sha256
from engines.temporal_head import load_head, save_head
from pipeline.config import DEFAULT_MODEL, validate_config
from pipeline.errors import ConfigError
from pipeline.state import store as store_module
from pipeline.state.identity import IdentityError, backbone_identity, backbone_identity_of_onnx, head_identity, short
from pipeline.state.restore import REASONS, restore_decision
from pipeline.state.snapshot import RowShape, RowState, StreamSnapshot
from pipeline.state.snapshot_file import SnapshotCorrupt, SnapshotMalformed, SnapshotTruncated, encode
from pipeline.state.store import DirectoryStore, SharedDirectoryStore, SnapshotStore, StoreError

HEAD, BACKBONE = "head-sha256:" + "a" * 64, "bb/224x224/e1280/rev4/weights-sha256:" + "b" * 64


def _snapshot(stream: str = "cam", wall_time: float = 1000.0, **overrides) -> StreamSnapshot:
    row = RowState(np.full((2, 4), 0.5, np.float32), np.arange(3, dtype=np.float32), False)
    fields = dict(stream=stream, generation=1, seq=9, t=2.25, wall_time=wall_time, head_id=HEAD, backbone_id=BACKBONE,
                  row=row, track={"steps_since_reset": 3, "last_t": 2.25, "classes": {}})
    fields.update(overrides)
    return StreamSnapshot(**fields)


@pytest.mark.parametrize("kind", [DirectoryStore, SharedDirectoryStore])
def test_a_store_keeps_the_latest_snapshot_of_each_stream(tmp_path, kind):
    store: SnapshotStore = kind(tmp_path / "state", fsync=False)
    assert store.streams() == [] and store.load("cam") is None
    store.save(_snapshot("cam", seq=1))
    store.save(_snapshot("cam", seq=2))
    store.save(_snapshot("Cam.2_b-c", seq=5))
    assert store.streams() == ["Cam.2_b-c", "cam"]
    loaded = store.load("cam", expect=RowShape(2, 4, 3))
    assert loaded.seq == 2 and np.array_equal(loaded.row.previous, [0, 1, 2])
    assert store.remove("cam") is True and store.remove("cam") is False
    assert store.streams() == ["Cam.2_b-c"]
    # Only the snapshots themselves are there: no temporary file outlives a save.
    assert sorted(os.listdir(tmp_path / "state")) == ["Cam.2_b-c.safetensors"]


def test_names_that_are_not_stream_names_never_reach_the_file_system(tmp_path):
    store = DirectoryStore(tmp_path, fsync=False)
    for bad in ["../etc/passwd", ".hidden", "a/b", "", "x" * 65]:
        with pytest.raises(StoreError, match="is not a stream name"):
            store.load(bad)
    (tmp_path / ".cam.123.0.tmp").write_bytes(b"half")  # a writer died mid-save
    (tmp_path / "notes.txt").write_text("x")
    assert store.streams() == []


def test_a_file_holding_another_stream_is_refused(tmp_path):
    store = DirectoryStore(tmp_path, fsync=False)
    (tmp_path / "cam.safetensors").write_bytes(encode(_snapshot("other")))
    with pytest.raises(SnapshotMalformed, match="holds stream 'other', not 'cam'"):
        store.load("cam")


def test_a_folder_that_cannot_be_made_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot be made"):
        DirectoryStore(tmp_path / "file" / "state")


def test_the_shared_store_names_temporary_files_after_host_and_process(tmp_path, monkeypatch):
    store = SharedDirectoryStore(tmp_path, fsync=False, host="node 7/a")
    names = [store._temp_name("cam") for _ in range(2)]
    assert names[0] == f".cam.node_7_a.{os.getpid()}.0.tmp" and names[0] != names[1]


def test_the_shared_store_reads_again_a_file_replaced_under_it(tmp_path, monkeypatch):
    waits: list[float] = []
    store = SharedDirectoryStore(tmp_path, fsync=False, read_attempts=3, retry_wait_s=0.01, sleep=waits.append)
    store.save(_snapshot("cam"))
    real = store_module.read_snapshot
    failures = [OSError(errno.ESTALE, "Stale file handle"), SnapshotTruncated(tmp_path / "cam.safetensors", "short")]

    def flaky(path, expect=None):
        if failures:
            raise failures.pop(0)
        return real(path, expect)

    monkeypatch.setattr(store_module, "read_snapshot", flaky)
    assert store.load("cam").seq == 9 and waits == [0.01, 0.01]
    failures[:] = [OSError(errno.ESTALE, "Stale file handle")] * 3
    with pytest.raises(OSError, match="Stale"):
        store.load("cam")
    # What is not a race is not retried: a corrupt file stays corrupt.
    failures[:] = [SnapshotCorrupt(tmp_path / "cam.safetensors", "checksum mismatch")]
    waits.clear()
    with pytest.raises(SnapshotCorrupt):
        store.load("cam")
    assert waits == []


# -- whether to continue -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "now, head, backbone, use, reason, fragment",
    [
        (1005.0, HEAD, BACKBONE, True, "restored", "continuing from seq 9 of generation 1 (t=2.250 s), taken 5.0 s ago"),
        (1010.0, HEAD, BACKBONE, True, "restored", "taken 10.0 s ago"),  # max_age_s itself is young enough
        (1010.5, HEAD, BACKBONE, False, "too_old", "10.5 s old, older than max_age_s 10 s"),
        (999.0, HEAD, BACKBONE, True, "restored", "taken 0.0 s ago"),  # a second of clock skew
        (980.0, HEAD, BACKBONE, False, "from_future", "dated 20.0 s in the future"),
        (1005.0, "head-sha256:" + "c" * 64, BACKBONE, False, "other_head",
         "belongs to head head-sha256:aaaaaaaaaaaaaaaa, this run's head is head-sha256:cccccccccccccccc"),
        (5000.0, "head-sha256:" + "c" * 64, "x", False, "other_head", "head"),  # the head comes first
        (1005.0, HEAD, "bb/other", False, "other_backbone", "bb/other"),
    ],
)
def test_restore_decision(now, head, backbone, use, reason, fragment):
    decision = restore_decision(_snapshot(wall_time=1000.0), now_wall=now, max_age_s=10.0, head_id=head,
                                backbone_id=backbone)
    assert (decision.use, bool(decision), decision.reason) == (use, use, reason)
    assert reason in REASONS and fragment in decision.detail and "'cam'" in decision.detail


# -- identities ----------------------------------------------------------------------------------

def test_a_head_is_identified_by_its_weights_and_config_not_its_file(tmp_path):
    head, metadata = load_head(DEFAULT_MODEL)
    identity = head_identity(head)
    assert identity.startswith("head-sha256:") and len(identity) == len("head-sha256:") + 64
    assert short(identity) == identity[:len("head-sha256:") + 16]
    # Copied elsewhere with other event settings beside the weights: the same GRU, the same identity.
    copy = tmp_path / "renamed.safetensors"
    save_head(copy, head, {**{k: v for k, v in metadata.items() if k not in ("format", "head")}, "events": "{}"})
    assert head_identity(load_head(copy)[0]) == identity
    # One weight changed: another head.
    head.classifier.bias.data[0] += 1e-3
    assert head_identity(head) != identity


def test_a_backbone_is_identified_by_its_spec_weights_and_export_revision(tmp_path):
    from engines.backbone import EXPORT_REVISION
    from engines.factory import DEFAULT_INT8_ONNX_PATH, DEFAULT_ONNX_PATH

    ours = backbone_identity(EFFICIENTNET_LITE0, "f" * 64, EXPORT_REVISION)
    assert ours == f"efficientnet_lite0-imagenet/224x224/e1280/rev{EXPORT_REVISION}/weights-sha256:{'f' * 64}"
    if DEFAULT_ONNX_PATH.is_file():
        stamped = backbone_identity_of_onnx(DEFAULT_ONNX_PATH, EFFICIENTNET_LITE0)
        assert stamped.startswith(f"efficientnet_lite0-imagenet/224x224/e1280/rev{EXPORT_REVISION}/weights-sha256:")
    # The INT8 graph is named by its bytes: a snapshot of FP32 embeddings' state is not restored onto INT8 ones.
    int8 = backbone_identity_of_onnx(DEFAULT_INT8_ONNX_PATH, EFFICIENTNET_LITE0)
    assert int8 == f"efficientnet_lite0-imagenet/224x224/e1280/onnx-sha256:{file_sha256(DEFAULT_INT8_ONNX_PATH)}"
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    own = tmp_path / "own.onnx"
    onnx.save(helper.make_model(graph), str(own))
    assert backbone_identity_of_onnx(own, EFFICIENTNET_LITE0) == \
        f"efficientnet_lite0-imagenet/224x224/e1280/onnx-sha256:{file_sha256(own)}"
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 10)
    with pytest.raises(IdentityError, match="bad.onnx: cannot identify the backbone"):
        backbone_identity_of_onnx(tmp_path / "bad.onnx", EFFICIENTNET_LITE0)


# -- the state section ---------------------------------------------------------------------------

def test_the_state_section_has_its_defaults_and_refuses_what_cannot_work(tmp_path):
    state = validate_config({"sources": [{"uri": "a.mp4"}]}).state
    assert (state.snapshot_interval_s, state.max_age_s, state.dir, state.restore) == (1.0, 10.0, None, True)
    state = validate_config({"sources": [{"uri": "a.mp4"}], "state": {"dir": str(tmp_path), "restore": False}}).state
    assert state.dir == tmp_path and state.restore is False
    for bad, fragment in [({"snapshot_interval_s": 0}, "state.snapshot_interval_s"),
                          ({"max_age_s": 0.5}, "snapshot_interval_s (1.0) must be below max_age_s (0.5)"),
                          ({"folder": "x"}, "state.folder: unknown key; allowed here: dir, max_age_s, restore, shared, "
                                            "snapshot_interval_s")]:
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            validate_config({"sources": [{"uri": "a.mp4"}], "state": bad})
