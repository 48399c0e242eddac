"""The stage processes of a run, as the supervisor sees them: started, up, finished, failed, dead.

A stage is a plain child process, ``python -m pipeline.stages KIND``, its
settings written as JSON to its stdin. It starts with SIGINT, SIGTERM and SIGHUP
blocked (and then ignores them), so a signal to the whole process group
(Ctrl-C, systemd, ``timeout``) reaches only the supervisor, which drains.
A restart is a new process under the same name (and the same settings,
unless the supervisor replaces them).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engines.factory import REPO_ROOT
from pipeline.metrics import MULTIPROC_ENV, mark_process_dead
from pipeline.stages.settings import StageKind, StageSettings, encode_settings
from pipeline.supervision.signals import STOP_SIGNALS
from pipeline.transport.control import StageFailed

logger = logging.getLogger(__name__)

KILL_WAIT_S = 5.0
RELEASE_WAIT_S = 5.0  # a released stage closes sockets whose peers have read everything: it exits at once


@dataclass
class StageProcess:
    settings: StageSettings
    process: subprocess.Popen | None = None
    ready: bool = False  # said Hello: set up and taking work
    done: bool = False  # said StageDone: finished its work
    failed: StageFailed | None = None  # its last words, when it could not go on
    given_up: bool = False  # dead for good: no restart follows
    exited: bool = False  # its exit has been seen and dealt with
    restart_at: float | None = None
    last_seen: float = 0.0  # when it last said anything (supervisor's clock)
    result: dict = field(default_factory=dict)  # what StageDone carried
    drain_sent: bool = False

    @property
    def name(self) -> str:
        return self.settings.stage

    @property
    def kind(self) -> StageKind:
        return self.settings.kind

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def spawn(self, metrics_dir: Path, now: float) -> None:
        """Start (or start again) the process; its state starts afresh."""
        env = dict(os.environ)
        env[MULTIPROC_ENV] = str(metrics_dir)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        # Children inherit the blocked mask, so a group signal cannot kill one before it ignores them.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
        try:
            process = subprocess.Popen([sys.executable, "-m", "pipeline.stages", self.kind.value],
                                       stdin=subprocess.PIPE, env=env, text=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            process.stdin.write(encode_settings(self.settings))
            process.stdin.close()
        except OSError as exc:  # it died before reading them: the next check sees the exit
            logger.debug("%s did not take its settings: %s", self.name, exc)
        self.process = process
        self.ready = self.done = self.exited = self.drain_sent = False
        self.failed = None
        self.restart_at = None
        self.last_seen = now
        logger.debug("started %s (pid %d)", self.name, process.pid)

    def reap(self, metrics_dir: Path) -> None:
        """Its exit is dealt with: it is no longer up, and its live gauges leave the metrics."""
        self.exited = True
        self.ready = False
        mark_process_dead(self.process.pid, metrics_dir)

    def exit_error(self, code: int) -> tuple[str, bool]:
        """Why it died, and whether a restart would meet the same error."""
        if self.failed is not None:
            return self.failed.error, self.failed.fatal
        if code < 0:
            return f"killed by {signal.Signals(-code).name}", False
        return f"exit code {code}", False


def release_finished(stages: list[StageProcess], release: Callable[[StageProcess], object]) -> None:
    """The run has drained: the stages that finished but hold their output sockets open for the stages after
    them (stages/bootstrap.py) are told to close them and exit (``release``), and given RELEASE_WAIT_S to;
    kill_all ends any still running then."""
    held = [s for s in stages if s.alive and s.done]
    for stage in held:
        release(stage)
    deadline = time.monotonic() + RELEASE_WAIT_S
    while any(s.alive for s in held) and time.monotonic() < deadline:
        time.sleep(0.02)


def kill_all(stages: list[StageProcess], metrics_dir: Path) -> None:
    """SIGKILL every process still running, wait for each, and reap those not reaped yet."""
    for stage in stages:
        if stage.alive:
            stage.process.kill()
    for stage in stages:
        if stage.process is None:
            continue
        try:
            stage.process.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            logger.error("%s (pid %d) did not die on SIGKILL", stage.name, stage.process.pid)
        if not stage.exited:
            stage.reap(metrics_dir)
