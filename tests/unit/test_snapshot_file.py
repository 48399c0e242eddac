"""The snapshot file: what is written is read back bit for bit; what is bad on disk is refused, named, with a reason."""

from __future__ import annotations

import json
import pickle
import struct
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import save

from pipeline.config import DEFAULT_MODEL
from pipeline.state import snapshot_file
from pipeline.state.snapshot import RowShape, RowState, SnapshotError, StreamSnapshot
from pipeline.state.snapshot_file import (
    FORMAT_NAME,
    SnapshotCorrupt,
    SnapshotFileError,
    SnapshotForeign,
    SnapshotFutureVersion,
    SnapshotMalformed,
    SnapshotTruncated,
    SnapshotWriteError,
    encode,
    read_snapshot,
    write_snapshot,
)

TRACK = {"steps_since_reset": 7, "last_t": 1.75, "classes": {"a": {"active": True, "run_steps": 1, "run_sum": 0.1,
                                                                   "run_start_t": 1.75, "onset_t": None,
                                                                   "segment_sum": 3.3, "segment_steps": 5}}}


def _snapshot(rng: np.random.Generator, **overrides) -> StreamSnapshot:
    row = RowState(rng.standard_normal((2, 8)).astype(np.float32), rng.standard_normal(5).astype(np.float32), True)
    fields = dict(stream="cam-1", generation=2, seq=41, t=10.25, wall_time=1_700_000_000.125, head_id="head-sha256:ab",
                  backbone_id="bb/rev4/weights-sha256:cd", row=row, track=TRACK)
    fields.update(overrides)
    return StreamSnapshot(**fields)


def _same(a: StreamSnapshot, b: StreamSnapshot) -> bool:
    return (np.array_equal(a.row.hidden, b.row.hidden) and np.array_equal(a.row.previous, b.row.previous)
            and (a.stream, a.generation, a.seq, a.t, a.wall_time, a.head_id, a.backbone_id, a.row.has_previous, a.track)
            == (b.stream, b.generation, b.seq, b.t, b.wall_time, b.head_id, b.backbone_id, b.row.has_previous, b.track))


def _file(tensors: dict, metadata: dict) -> bytes:
    """A safetensors file of our making, for the refusals that come after the checksum."""
    if "snapshot" in metadata and {"hidden", "previous"} <= set(tensors):
        metadata = {**metadata, "crc32": snapshot_file._crc(metadata["snapshot"], tensors)}
    return save(tensors, metadata=metadata)


def _fields(snapshot: StreamSnapshot) -> dict:
    data = encode(snapshot)
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(json.loads(data[8:8 + length])["__metadata__"]["snapshot"])


def test_a_snapshot_comes_back_bit_for_bit_and_the_write_leaves_no_temporary_file(tmp_path, rng):
    snapshot = _snapshot(rng)
    path = tmp_path / "cam-1.safetensors"
    write_snapshot(path, snapshot, ".cam-1.tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam-1.safetensors"]
    back = read_snapshot(path, expect=RowShape(2, 8, 5))
    assert _same(snapshot, back) and back.row.hidden.dtype == np.float32
    # Replaced whole: the second write is what the next read sees.
    write_snapshot(path, _snapshot(rng, seq=42), ".cam-1.tmp", fsync=False)
    assert read_snapshot(path).seq == 42


def test_the_format_is_safetensors_with_our_name_version_and_fields(rng):
    data = encode(_snapshot(rng))
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    assert header["hidden"]["dtype"] == "F32" and header["hidden"]["shape"] == [2, 8]
    assert header["previous"]["shape"] == [5]
    meta = header["__metadata__"]
    assert (meta["format"], meta["version"]) == (FORMAT_NAME, "1") and len(meta["crc32"]) == 8
    assert sorted(json.loads(meta["snapshot"])) == ["backbone", "event_numbering", "generation", "has_previous", "head",
                                                    "seq", "stream", "t", "track", "wall_time"]


def test_how_its_events_are_named_reads_back_and_an_earlier_file_without_it_still_reads(rng, tmp_path):
    path = tmp_path / "cam.safetensors"
    write_snapshot(path, replace(_snapshot(rng), event_numbering=("ab12cd34", 3, 41)), ".cam-1.tmp", fsync=False)
    assert read_snapshot(path).event_numbering == ("ab12cd34", 3, 41)
    write_snapshot(path, _snapshot(rng), ".cam-2.tmp", fsync=False)  # None: written as null, read as None
    assert read_snapshot(path).event_numbering is None


@pytest.mark.parametrize("keep", [0, 5, 8, 20, "header", -1])
def test_a_truncated_file_is_refused_as_truncated(tmp_path, rng, keep):
    data = encode(_snapshot(rng))
    (length,) = struct.unpack("<Q", data[:8])
    cut = {"header": 8 + length}.get(keep, keep)  # "header": the header whole, every tensor byte gone
    path = tmp_path / "cam-1.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(SnapshotTruncated) as caught:
        read_snapshot(path)
    assert str(path) in str(caught.value) and caught.value.reason == "truncated"


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda data: b"\x00" * 64, "header length 0"),
        (lambda data: b"GIF89a" + data, "header length"),
        (lambda data: pickle.dumps({"hidden": [1.0]}), "header length"),  # never unpickled: refused by its framing
        (lambda data: struct.pack("<Q", 6) + b"{nope}" + b"\0" * 8, "the header is not JSON"),
        (lambda data: struct.pack("<Q", 2) + b"[]", "the header is a JSON list"),
        (lambda data: data[:-1] + bytes([data[-1] ^ 0x01]), "checksum mismatch"),  # one bit of a tensor
        (lambda data: data.replace(b'\\"seq\\":41', b'\\"seq\\":42'), "checksum mismatch"),
        (lambda data: data + b"\0" * 4, "not a readable safetensors file"),
    ],
)
def test_a_corrupt_file_is_refused_as_corrupt(tmp_path, rng, make, fragment):
    path = tmp_path / "cam-1.safetensors"
    path.write_bytes(make(encode(_snapshot(rng))))
    with pytest.raises(SnapshotCorrupt, match=fragment) as caught:
        read_snapshot(path)
    assert caught.value.reason == "corrupt" and str(path) in str(caught.value)


def test_a_file_of_another_format_is_refused_as_foreign(tmp_path):
    # The shipped head checkpoint is a perfectly good safetensors file: just not a snapshot.
    with pytest.raises(SnapshotForeign, match="format 'streaming-action-head/1', expected 'actionpipe-stream-state'"):
        read_snapshot(DEFAULT_MODEL)
    path = tmp_path / "plain.safetensors"
    path.write_bytes(save({"x": np.zeros(2, np.float32)}))
    with pytest.raises(SnapshotForeign, match="format None"):
        read_snapshot(path)


def test_a_later_version_of_the_format_is_refused_not_guessed_at(tmp_path, rng):
    path = tmp_path / "cam-1.safetensors"
    path.write_bytes(_file({"hidden": np.zeros((2, 8), np.float32)}, {"format": FORMAT_NAME, "version": "2"}))
    with pytest.raises(SnapshotFutureVersion, match="version 2 of the format, this program reads up to 1") as caught:
        read_snapshot(path)
    assert caught.value.reason == "future_version"
    path.write_bytes(_file({"hidden": np.zeros((2, 8), np.float32)}, {"format": FORMAT_NAME, "version": "one"}))
    with pytest.raises(SnapshotCorrupt, match="version 'one' is not a number"):
        read_snapshot(path)


def test_missing_tensors_wrong_shapes_and_missing_fields_are_refused_as_malformed(tmp_path, rng):
    snapshot = _snapshot(rng)
    text = json.dumps(_fields(snapshot), separators=(",", ":"))
    hidden, previous = snapshot.row.hidden, snapshot.row.previous
    path = tmp_path / "cam-1.safetensors"
    cases = [
        ({"hidden": hidden}, text, None, "tensor(s) ['previous'] missing"),
        ({"hidden": hidden[0], "previous": previous}, text, None, "tensor 'hidden' is float32 (8,), expected 2-D"),
        ({"hidden": hidden.astype(np.float64), "previous": previous}, text, None, "expected 2-D float32"),
        ({"hidden": hidden, "previous": previous}, text, RowShape(2, 8, 6),
         "shape 2 layer(s) x 8, previous 5, this head's is 2 layer(s) x 8, previous 6"),
        ({"hidden": hidden, "previous": previous}, json.dumps({"stream": "cam-1"}), None, "field(s) ['backbone',"),
        ({"hidden": hidden, "previous": previous}, text.replace('"seq":41', '"seq":-1'), None,
         "seq must be an integer >= 0"),
        ({"hidden": hidden, "previous": previous}, text.replace('"stream":"cam-1"', '"stream":"../x"'), None,
         "'../x' is not a valid stream name"),
        ({"hidden": np.full_like(hidden, np.inf), "previous": previous}, text, None, "hidden holds values that are not finite"),
    ]
    for tensors, fields, expect, fragment in cases:
        path.write_bytes(_file(tensors, {"format": FORMAT_NAME, "version": "1", "snapshot": fields}))
        with pytest.raises(SnapshotMalformed) as caught:
            read_snapshot(path, expect)
        assert fragment in str(caught.value) and str(path) in str(caught.value), fragment
        assert caught.value.reason == "malformed"


def test_every_refusal_is_an_error_of_ours_with_a_one_word_reason():
    from pipeline.errors import ActionPipeError

    kinds = [SnapshotTruncated, SnapshotCorrupt, SnapshotForeign, SnapshotFutureVersion, SnapshotMalformed,
             SnapshotWriteError]
    assert all(issubclass(k, SnapshotFileError) and issubclass(k, ActionPipeError) for k in kinds)
    assert len({k.reason for k in kinds}) == len(kinds)
    assert "\n" not in str(SnapshotCorrupt("/x/cam.safetensors", "checksum mismatch"))


def test_a_failed_write_leaves_the_old_snapshot_and_no_temporary_file(tmp_path, rng, monkeypatch):
    path = tmp_path / "cam-1.safetensors"
    write_snapshot(path, _snapshot(rng, seq=1), ".t1")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot_file.os, "replace", refuse)
    with pytest.raises(SnapshotWriteError, match="No space left on device") as caught:
        write_snapshot(path, _snapshot(rng, seq=2), ".t2")
    assert str(path) in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam-1.safetensors"]
    monkeypatch.undo()
    assert read_snapshot(path).seq == 1


def test_a_snapshot_that_cannot_be_written_is_refused_before_any_file(rng):
    with pytest.raises(SnapshotError, match="stream name"):
        _snapshot(rng, stream="a/b")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        encode(_snapshot(rng, track={"last_t": float("-inf")}))
