"""A stream snapshot on disk: one safetensors file, written atomically, refused with a reason when bad.

The layout (safetensors: an 8-byte little-endian header length, a JSON
header, then the raw tensor bytes; read without pickle):

* tensors ``hidden`` float32 [layers, hidden] and ``previous`` float32
  [state_vector_dim] (``snapshot.RowState``);
* the header's ``__metadata__`` (strings only, as safetensors wants):
  ``format`` = ``actionpipe-stream-state``, ``version`` = ``1``,
  ``snapshot`` = JSON of ``{stream, generation, seq, t, wall_time, head,
  backbone, has_previous, track}`` (``track``: the event detector's export
  for the stream), and ``crc32`` = 8 hex digits of the CRC-32 of the
  ``snapshot`` text's UTF-8 bytes followed by the two tensors' bytes (so a
  flipped bit anywhere but in the framing is caught, not continued).

Writing goes to a temporary file in the same folder, is flushed (and
fsynced when asked), then ``os.replace``\\ d over the target: a reader sees
the old snapshot or the new one, never a torn one.

Reading refuses, with a :class:`SnapshotFileError` naming the file and why
(its ``reason`` is a short word for a metric label): ``truncated``,
``corrupt`` (not safetensors, bad JSON, checksum mismatch), ``foreign`` (not
our format), ``future_version``, ``malformed`` (missing tensors or fields,
wrong shapes). Versions before ours would be read by their own decoder;
there are none yet.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from pipeline.state.snapshot import RowShape, RowState, SnapshotError, StreamSnapshot

log = logging.getLogger(__name__)

FORMAT_NAME = "actionpipe-stream-state"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
# A snapshot holds a few kilobytes; anything this large is not one of ours (and is not read into memory).
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024
_FIELDS = ("stream", "generation", "seq", "t", "wall_time", "head", "backbone", "has_previous", "track")
_TENSORS = {"hidden": 2, "previous": 1}


class SnapshotFileError(SnapshotError):
    """A snapshot file that cannot be read or written; ``reason`` says why in one word."""

    reason = "unreadable"

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"stream snapshot {path}: {why}")
        self.path = str(path)
        self.why = why


class SnapshotTruncated(SnapshotFileError):
    reason = "truncated"


class SnapshotCorrupt(SnapshotFileError):
    reason = "corrupt"


class SnapshotForeign(SnapshotFileError):
    reason = "foreign"


class SnapshotFutureVersion(SnapshotFileError):
    reason = "future_version"


class SnapshotMalformed(SnapshotFileError):
    reason = "malformed"


class SnapshotWriteError(SnapshotFileError):
    reason = "write_failed"


# -- encoding ----------------------------------------------------------------------------------

def encode(snapshot: StreamSnapshot) -> bytes:
    """The snapshot as the bytes of its file."""
    from safetensors.numpy import save

    row = snapshot.row
    body = {
        "stream": snapshot.stream, "generation": snapshot.generation, "seq": snapshot.seq, "t": snapshot.t,
        "wall_time": snapshot.wall_time, "head": snapshot.head_id, "backbone": snapshot.backbone_id,
        "has_previous": bool(row.has_previous), "track": snapshot.track,
        "event_numbering": list(snapshot.event_numbering) if snapshot.event_numbering else None,
    }
    # allow_nan=False: a track holding inf or NaN is a bug upstream, and strict JSON readers refuse it.
    text = json.dumps(body, allow_nan=False, separators=(",", ":"))
    tensors = {"hidden": _little_endian(row.hidden), "previous": _little_endian(row.previous)}
    metadata = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "snapshot": text,
                "crc32": _crc(text, tensors)}
    return save(tensors, metadata=metadata)


def decode(data: bytes, source: str | Path, expect: RowShape | None = None) -> StreamSnapshot:
    """The snapshot in ``data`` (the bytes of the file ``source``); raises a :class:`SnapshotFileError`."""
    header, body_length = _header(data, source)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise SnapshotForeign(source, f"not a stream snapshot (format {found!r}, expected {FORMAT_NAME!r})")
    version = metadata.get("version")
    if not isinstance(version, str) or not version.isdigit():
        raise SnapshotCorrupt(source, f"version {version!r} is not a number")
    if int(version) > FORMAT_VERSION:
        raise SnapshotFutureVersion(
            source, f"written in version {version} of the format, this program reads up to {FORMAT_VERSION}")
    if int(version) < 1:
        raise SnapshotCorrupt(source, f"version {version} does not exist")
    needed = _bytes_needed(header)
    if needed > body_length:
        raise SnapshotTruncated(source, f"its tensors need {needed} bytes after the header, the file has {body_length}")
    tensors = _tensors(data, source)
    text = metadata.get("snapshot")
    if not isinstance(text, str) or metadata.get("crc32") != _crc(text, tensors):
        raise SnapshotCorrupt(source, "checksum mismatch (the file changed after it was written)")
    return _snapshot(text, tensors, source, expect)


def _header(data: bytes, source: str | Path) -> tuple[dict, int]:
    """The safetensors header and how many bytes follow it; truncation and garbage told apart."""
    if len(data) < 8:
        raise SnapshotTruncated(source, f"{len(data)} bytes, shorter than a safetensors header length")
    (length,) = struct.unpack("<Q", data[:8])
    if length == 0 or length > MAX_SNAPSHOT_BYTES:
        raise SnapshotCorrupt(source, f"header length {length} is not a safetensors file's")
    if 8 + length > len(data):
        raise SnapshotTruncated(source, f"the header needs {length} bytes, {len(data) - 8} are there")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotCorrupt(source, f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise SnapshotCorrupt(source, f"the header is a JSON {type(header).__name__}, not an object")
    return header, len(data) - 8 - length


def _bytes_needed(header: dict) -> int:
    """The end of the furthest tensor the header declares (a malformed entry is left to the loader)."""
    ends = [info["data_offsets"][1] for name, info in header.items()
            if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2 and isinstance(info["data_offsets"][1], int)]
    return max(ends, default=0)


def _tensors(data: bytes, source: str | Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise SnapshotCorrupt(source, f"not a readable safetensors file: {exc}") from None
    missing = sorted(set(_TENSORS) - set(tensors))
    if missing:
        raise SnapshotMalformed(source, f"tensor(s) {missing} missing (it holds {sorted(tensors)})")
    for name, ndim in _TENSORS.items():
        value = tensors[name]
        if value.dtype != np.float32 or value.ndim != ndim:
            raise SnapshotMalformed(source, f"tensor {name!r} is {value.dtype} {value.shape}, expected {ndim}-D float32")
    return tensors


def _snapshot(text: str, tensors: dict[str, np.ndarray], source: str | Path, expect: RowShape | None) -> StreamSnapshot:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotCorrupt(source, f"its snapshot fields are not JSON: {exc}") from None
    missing = sorted(set(_FIELDS) - set(body)) if isinstance(body, dict) else list(_FIELDS)
    if missing:
        raise SnapshotMalformed(source, f"snapshot field(s) {missing} missing")
    row_shape = RowShape(*tensors["hidden"].shape, tensors["previous"].shape[0])
    if expect is not None and row_shape != expect:
        raise SnapshotMalformed(source, f"its state has shape {_shape_text(row_shape)}, this head's is {_shape_text(expect)}")
    numbers = [body[k] for k in ("t", "wall_time")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise SnapshotMalformed(source, f"t and wall_time must be finite numbers, got {numbers}")
    try:
        row = RowState(hidden=tensors["hidden"], previous=tensors["previous"], has_previous=body["has_previous"])
        return StreamSnapshot(stream=body["stream"], generation=body["generation"], seq=body["seq"],
                              t=float(body["t"]), wall_time=float(body["wall_time"]), head_id=body["head"],
                              backbone_id=body["backbone"], row=row, track=body["track"],
                              event_numbering=_numbering(body.get("event_numbering"), source))
    except SnapshotError as exc:
        raise SnapshotMalformed(source, str(exc)) from None


def _numbering(value, source: str | Path) -> tuple[str, int, int] | None:
    if value is None:  # a snapshot of an earlier version, or of a stream never named otherwise
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise SnapshotMalformed(source, f"event_numbering must be [epoch, generation, seq], got {value!r}")
    return tuple(value)


def _shape_text(shape: RowShape) -> str:
    return f"{shape.layers} layer(s) x {shape.hidden}, previous {shape.previous}"


def _little_endian(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype="<f4")


def _crc(text: str, tensors: dict[str, np.ndarray]) -> str:
    crc = zlib.crc32(text.encode())
    for name in sorted(_TENSORS):
        crc = zlib.crc32(_little_endian(tensors[name]).tobytes(), crc)
    return f"{crc:08x}"


# -- files -------------------------------------------------------------------------------------

def write_snapshot(path: Path, snapshot: StreamSnapshot, temp_name: str, fsync: bool = True) -> None:
    """Write ``snapshot`` to ``path`` atomically, through ``temp_name`` in the same folder.

    ``fsync``: also survive a power cut or a kernel crash (file and folder synced). Without it a
    process crash still leaves the whole new file or the whole old one: the page cache outlives
    the process."""
    data = encode(snapshot)
    temp = path.with_name(temp_name)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        if fsync:
            _fsync_folder(path.parent)
    except OSError as exc:
        _remove_quietly(temp)
        raise SnapshotWriteError(path, f"cannot be written: {exc}") from exc


def read_snapshot(path: Path, expect: RowShape | None = None) -> StreamSnapshot:
    """The snapshot in ``path``; FileNotFoundError when there is none, a SnapshotFileError when it is bad."""
    with path.open("rb") as handle:
        data = handle.read(MAX_SNAPSHOT_BYTES + 1)
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise SnapshotCorrupt(path, f"larger than {MAX_SNAPSHOT_BYTES} bytes: not a stream snapshot")
    return decode(data, path, expect)


def _fsync_folder(folder: Path) -> None:
    # The rename is an entry in the folder: without this a power cut may lose it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(temp: Path) -> None:
    """Remove a half-written temporary file; failing to is not worth hiding the write's own error for."""
    try:
        temp.unlink(missing_ok=True)
    except OSError as exc:
        # The caller raises the write's own error; a stray temp file is ignored by readers (a dot name).
        log.warning("could not remove the temporary snapshot %s: %s", temp, exc)
