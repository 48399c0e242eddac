"""Output files: checked before anything starts, never silently overwritten,
and written so that a full disk never leaves half a line.

* :func:`prepare_output` runs in the supervisor before any stage starts: it
  refuses a path whose folder is missing, a folder, or a file that cannot be
  opened for writing, naming the setting; and it rotates what an earlier run
  left (``FILE`` -> ``FILE.1`` -> ``FILE.2`` ...) unless asked to append.
  Devices and pipes (``/dev/stdout``, ``/dev/full``) are written in place.
* :class:`LineAppender` appends one whole line per write. A write that fails
  (``ENOSPC``) is cut back to the last complete line, reported to the caller,
  and the next write tries again: the file only ever holds complete lines.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ActionPipeError

logger = logging.getLogger(__name__)


class OutputError(ActionPipeError, OSError):
    """An output path that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class PreparedOutput:
    path: Path
    rotated_to: Path | None


def _rotated_name(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def prepare_output(path: Path, setting: str, existing: str = "rotate", keep: int = 5) -> PreparedOutput:
    """Check that ``path`` can be written; rotate an earlier run's file unless ``existing == 'append'``."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{setting}: folder {parent} does not exist (create it, or choose another path)")
    rotated_to = None
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise OutputError(f"{setting}: {path} cannot be used: {exc.strerror}") from exc
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{setting}: {path} is a folder; give a file path")
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size > 0 and existing == "rotate":
        rotated_to = _rotate(path, keep, setting)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(f"{setting}: {path} cannot be written: {exc.strerror}") from exc
    os.close(fd)
    if rotated_to is not None:
        logger.info("%s: kept the previous run's %s as %s", setting, path, rotated_to.name)
    return PreparedOutput(path, rotated_to)


def _rotate(path: Path, keep: int, setting: str) -> Path:
    try:
        oldest = _rotated_name(path, keep)
        if oldest.exists():
            oldest.unlink()
        for index in range(keep - 1, 0, -1):
            older = _rotated_name(path, index)
            if older.exists():
                older.rename(_rotated_name(path, index + 1))
        target = _rotated_name(path, 1)
        path.rename(target)
        return target
    except OSError as exc:
        raise OutputError(f"{setting}: cannot rotate the earlier {path} out of the way: {exc.strerror}") from exc


class LineAppender:
    """Appends whole lines to a file; a failed write is undone and raised, the next one tries again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        info = os.fstat(self._fd)
        self._regular = stat.S_ISREG(info.st_mode)
        self._good_size = info.st_size if self._regular else 0
        if self._regular and self._good_size and not self._ends_with_newline():
            # A predecessor killed mid-write (or an older partial line): cut back to its last whole line.
            self._truncate_to_last_newline()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def _truncate_to_last_newline(self) -> None:
        with open(self.path, "rb") as handle:
            data = handle.read()
        keep = data.rfind(b"\n") + 1
        os.ftruncate(self._fd, keep)
        logger.warning("%s: removed an incomplete last line (%d bytes) left by an earlier writer",
                       self.path, len(data) - keep)
        self._good_size = keep

    def write_line(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError:
            if self._regular:
                try:
                    os.ftruncate(self._fd, self._good_size)
                except OSError:
                    pass  # nothing more can be done; the error below is what the caller reports
            raise
        if self._regular:
            self._good_size += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
