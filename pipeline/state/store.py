"""Where stream snapshots are kept: one small interface, a local folder and a folder shared between machines.

:class:`SnapshotStore` is the seam: the temporal stage saves and loads
through it and never sees a path, so object storage can come later behind
the same four calls. Both stores here keep one file per stream,
``<stream>.safetensors`` (``snapshot_file.py``), in one folder. Stream names
match ``STREAM_NAME_PATTERN`` (letters, digits, ``_ . -``, not starting with
a dot), so a name is a safe file name as it is; temporary files start with a
dot and are never mistaken for a stream's.

A bad file is the reader's business to report: :meth:`load` raises the
``SnapshotFileError`` that names it and why, and the caller logs it, counts
it and starts the stream fresh.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pipeline.errors import ActionPipeError
from pipeline.sources.uri import STREAM_NAME_PATTERN
from pipeline.state.snapshot import RowShape, StreamSnapshot
from pipeline.state.snapshot_file import SUFFIX, SnapshotMalformed, SnapshotTruncated, read_snapshot, write_snapshot

log = logging.getLogger(__name__)


class StoreError(ActionPipeError, ValueError):
    """A store that cannot be used, or a stream name it cannot hold."""


class SnapshotStore(Protocol):
    def save(self, snapshot: StreamSnapshot, fsync: bool | None = None) -> None:
        """Keep ``snapshot`` as its stream's latest, replacing the one before (atomically); ``fsync``
        overrides the store's own choice for this save."""

    def load(self, stream: str, expect: RowShape | None = None) -> StreamSnapshot | None:
        """The stream's latest snapshot, None when there is none; a bad one raises SnapshotFileError."""

    def streams(self) -> list[str]:
        """The streams that have a snapshot, sorted."""

    def remove(self, stream: str) -> bool:
        """Forget the stream's snapshot; False when there was none."""


class DirectoryStore:
    """Snapshots in a folder of this machine (the run's own folder, or ``state.dir``).

    ``fsync``: make each save survive a power cut, not only a crash of the process; a folder that
    does not outlive the machine's uptime (the run folder, usually in ``$XDG_RUNTIME_DIR``) can do
    without."""

    def __init__(self, folder: str | Path, fsync: bool = True) -> None:
        self.folder = Path(folder)
        self.fsync = fsync
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"snapshot folder {self.folder} cannot be made: {exc}") from exc
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise StoreError(f"snapshot folder {self.folder} is not writable")
        # Each temporary name is new: two writers of one stream (threads, or runs sharing state.dir)
        # never write into one temporary file.
        self._counter = itertools.count()

    def path_of(self, stream: str) -> Path:
        if not isinstance(stream, str) or not STREAM_NAME_PATTERN.match(stream):
            raise StoreError(f"{stream!r} is not a stream name; it cannot name a snapshot file")
        return self.folder / f"{stream}{SUFFIX}"

    def save(self, snapshot: StreamSnapshot, fsync: bool | None = None) -> None:
        write_snapshot(self.path_of(snapshot.stream), snapshot, self._temp_name(snapshot.stream),
                       self.fsync if fsync is None else fsync)

    def load(self, stream: str, expect: RowShape | None = None) -> StreamSnapshot | None:
        path = self.path_of(stream)
        try:
            snapshot = self._read(path, expect)
        except FileNotFoundError:
            return None
        if snapshot.stream != stream:
            raise SnapshotMalformed(path, f"holds stream {snapshot.stream!r}, not {stream!r}")
        return snapshot

    def streams(self) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self.folder.glob(f"*{SUFFIX}")
                      if STREAM_NAME_PATTERN.match(p.name[: -len(SUFFIX)]))

    def remove(self, stream: str) -> bool:
        path = self.path_of(stream)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def _temp_name(self, stream: str) -> str:
        return f".{stream}.{os.getpid()}.{next(self._counter)}.tmp"

    def _read(self, path: Path, expect: RowShape | None) -> StreamSnapshot:
        # A file replaced while it is read is no trouble here: an open file keeps its old contents.
        return read_snapshot(path, expect)


class SharedDirectoryStore(DirectoryStore):
    """Snapshots in a folder several machines mount (NFS and the like), for streams that move between them.

    What it guarantees, given a file system whose rename is atomic on the server and whose clients
    see what was closed before they open (NFS's close-to-open consistency):

    * a reader gets a whole snapshot some writer saved, or none: writers write a temporary file
      named after their host, process and a counter (no two writers ever share one), sync it, and
      rename it over the stream's file;
    * a file replaced while it is read is read again: NFS may answer the old file's handle with
      ESTALE, or a client cache may show a short file for a moment; up to ``read_attempts`` reads,
      ``retry_wait_s`` apart, before the error stands;
    * the last save wins. Nothing here locks: that one machine writes a stream at a time is the
      coordinator's job (it fences a lost node before its streams resume elsewhere).

    Saves are fsynced by default: the node that reads a snapshot back is usually another one,
    after this one died. (The temporal stage asks for fsync only for the snapshots of a drained stop
    and of a move; its periodic ones are written without, to keep a second's snapshots of many streams
    cheap: ``docs/benchmarks.md``.)"""

    def __init__(self, folder: str | Path, fsync: bool = True, read_attempts: int = 3, retry_wait_s: float = 0.05,
                 sleep: Callable[[float], None] = time.sleep, host: str | None = None) -> None:
        super().__init__(folder, fsync)
        if read_attempts < 1:
            raise StoreError(f"read_attempts must be at least 1, got {read_attempts}")
        self.read_attempts = read_attempts
        self.retry_wait_s = retry_wait_s
        self._sleep = sleep
        # Host names may hold characters a file name should not; the temporary name only needs to be unique.
        self._host = re.sub(r"[^A-Za-z0-9_.-]", "_", host or socket.gethostname()) or "host"

    def _temp_name(self, stream: str) -> str:
        return f".{stream}.{self._host}.{os.getpid()}.{next(self._counter)}.tmp"

    def _read(self, path: Path, expect: RowShape | None) -> StreamSnapshot:
        attempt = 1
        while True:
            try:
                return read_snapshot(path, expect)
            except (OSError, SnapshotTruncated) as exc:
                stale = isinstance(exc, SnapshotTruncated) or exc.errno == errno.ESTALE
                if not stale or attempt >= self.read_attempts:
                    raise
                log.debug("snapshot %s changed while read (%s); reading it again", path, exc)
            attempt += 1
            self._sleep(self.retry_wait_s)
