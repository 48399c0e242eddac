"""The run's private folder: the stages' ipc sockets, the metrics every process writes, the live page's board.

A fresh folder per run (mode 0700, so only this user can reach its sockets),
under ``transport.ipc_dir`` when set, else ``$XDG_RUNTIME_DIR`` (which temp
cleaners leave alone), else the temp dir. Removed when the run ends; if the
supervisor itself is killed, the last stage process out removes it
(:mod:`pipeline.stages.bootstrap`); if every process was killed at once,
the next run's supervisor does (it names its own in the folder's ``owner``
file, pid and start time).

A temp cleaner (systemd-tmpfiles, tmpreaper) may still delete it mid-run.
The processes that were running keep working (their sockets and their
mmap'd metrics files live on, unlinked), but nothing could find them by
name any more: the totals would drop to what the next processes write, and
a restarted stage could reach neither the supervisor nor its peers. So the
supervisor holds a file descriptor on every socket and metrics file as it
appears (:meth:`RunFolder.keep`, each turn of its loop), and when the folder
is gone it makes it again and puts back, under each lost name, a symlink to
its descriptor (``/proc/<pid>/fd/<n>``): connecting through it reaches the
socket that is still bound, and reading through it reads the file the
process still writes. A stage that binds again replaces the symlink with
its new socket. Linux only, as are the stages' parent checks.

What the cleaner takes between two turns (50 ms) before it was held is
lost: a metrics file a process had only just made.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# prometheus_client's files of live gauges (gauge_livesum_<pid>.db): removed on purpose when their
# process ends (mark_process_dead), so one of a dead process is never put back.
LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def default_parent(ipc_dir: Path | None = None) -> Path:
    """Where run folders go: the configured folder, else the user's runtime dir, else the temp dir."""
    if ipc_dir is not None:
        return Path(ipc_dir)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    # Inherited through su or sudo it may belong to someone else: only a folder we can use counts.
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return Path(runtime)
    return Path(tempfile.gettempdir())


OWNER_FILE = "owner"  # the supervisor's pid and start time: a folder whose owner is gone is stale


def _process_identity(pid: int) -> str | None:
    """``pid`` and its start time (clock ticks since boot), which a reused pid does not share; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{pid} {fields[19]}"


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the run folders under ``parent`` whose supervisor is gone and which nobody removed: a run
    SIGKILLed with all its processes (the OOM killer, a machine's cell killed by Ray) leaves its folder.
    Only folders that name their owner are touched; the removed ones are returned."""
    removed = []
    for folder in Path(parent).glob("actionpipe-*"):
        try:
            owner = (folder / OWNER_FILE).read_text().strip()
        except OSError:
            continue  # no owner named (another user's, or a run of an earlier version): left alone
        if not owner or _process_identity(int(owner.split()[0])) == owner:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    if removed:
        logger.info("removed %d run folder(s) left by runs that were killed: %s", len(removed),
                    ", ".join(p.name for p in removed))
    return removed


@dataclass(frozen=True)
class _Held:
    fd: int
    device: int
    inode: int


class RunFolder:
    def __init__(self, parent: Path | None = None) -> None:
        parent = default_parent(parent)
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(parent)
        self.path = Path(tempfile.mkdtemp(prefix="actionpipe-", dir=str(parent)))
        self.metrics = self.path / "metrics"  # prometheus_client's multiprocess files, one set per process
        self.live = self.path / "live"  # the overlay's board, read by the live page
        self.metrics.mkdir()
        self.live.mkdir()
        (self.path / OWNER_FILE).write_text(_process_identity(os.getpid()) or "")
        self.generation = 0  # times the folder was made again after it vanished
        self._held: dict[Path, _Held] = {}
        self._failed_generation = -1  # the disappearance whose re-creation failed (logged once)

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.path}/{name}"

    # -- surviving a temp cleaner ------------------------------------------------------------------
    def keep(self, live_pids: set[int]) -> bool:
        """Makes the folder again if it vanished (True then), and holds what appeared since the last call.

        ``live_pids``: the stage processes running now; only their live gauges are put back."""
        recreated = False
        if not (self.metrics.is_dir() and self.live.is_dir()):
            recreated = self._recreate(live_pids)
            if not recreated:
                return False  # nothing new can be held where there is no folder
        self._hold_new()
        return recreated

    def _recreate(self, live_pids: set[int]) -> bool:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.metrics.mkdir(exist_ok=True)
            self.live.mkdir(exist_ok=True)
            # A cleaner still at work can take the folder again while it is being made: then a link finds
            # no folder to go in, and the next turn makes it again (links already back are skipped then).
            restored = self._put_back(live_pids)
        except OSError as exc:  # tried again next turn; said once per disappearance
            if self._failed_generation != self.generation:
                self._failed_generation = self.generation
                logger.error("the run folder %s vanished and cannot be made again yet (%s): restarted stages "
                             "cannot reach the others until it can; trying again", self.path, exc)
            return False
        self.generation += 1
        logger.warning("the run folder %s vanished (a temp cleaner?): made it again with %d socket(s) and metrics "
                       "file(s) of the running processes; counters carry on (set transport.ipc_dir to a folder "
                       "no cleaner touches)", self.path, restored)
        return True

    def _put_back(self, live_pids: set[int]) -> int:
        """Link what this process holds open back into the folder; how many were put back."""
        restored = 0
        for path, held in list(self._held.items()):
            if os.path.lexists(path):
                continue  # only part of the folder went: what is there is newer than what we hold
            live_gauge = LIVE_GAUGE_FILE.match(path.name)
            if live_gauge and int(live_gauge.group(1)) not in live_pids:
                self._release(path)
                continue
            os.symlink(f"/proc/{os.getpid()}/fd/{held.fd}", path)
            restored += 1
        return restored

    def _hold_new(self) -> None:
        for folder, wanted in ((self.path, stat.S_ISSOCK), (self.metrics, stat.S_ISREG)):
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                return  # vanished since the check: the next turn makes it again
            for entry in entries:
                path = Path(entry.path)
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not wanted(info.st_mode):
                    continue  # our own symlinks, the subfolders, a half-written board file
                held = self._held.get(path)
                if held is not None and (held.device, held.inode) == (info.st_dev, info.st_ino):
                    continue
                if held is not None:
                    self._release(path)  # a new socket or file under an old name: a restarted process
                # A socket cannot be opened for reading; O_PATH holds it all the same.
                flags = (os.O_PATH if stat.S_ISSOCK(info.st_mode) else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    fd = os.open(path, flags)
                except FileNotFoundError:
                    continue
                self._held[path] = _Held(fd, info.st_dev, info.st_ino)
        # A name that went while the folder stayed is not let go here: a cleaner deleting the folder
        # while this runs would look the same. A closed socket put back only refuses connections (its
        # stage's successor binds over it); a dead process's live gauges are not put back.

    def _release(self, path: Path) -> None:
        os.close(self._held.pop(path).fd)

    # -- the end ---------------------------------------------------------------------------------
    def remove(self) -> None:
        for path in list(self._held):
            self._release(path)
        shutil.rmtree(self.path, ignore_errors=True)  # the last stage out may have removed it first

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()
