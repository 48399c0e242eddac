"""The loop every stage process runs: hello, heartbeats, the parent check and the drain, in one place.

A stage supplies only its own work (:class:`StageWork`); the loop owns how
the stage talks to its supervisor:

* ``Hello`` once the stage is set up, so the supervisor starts sending work;
* a ``Heartbeat`` every :data:`HEARTBEAT_S`, so a hung stage is noticed (the
  supervisor kills one silent for 30 s) and the supervisor always knows
  what it would need if the stage died (a replay's position, open actions);
* every command but ``Drain`` is the stage's business; ``Drain`` means
  upstream has finished: the loop ends once the stage has had nothing to do
  for its ``drain_idle_s`` (everything upstream sent is on its way: the
  upstream processes hold their sockets open until the whole run has
  drained, so a short quiet spell is the end of it);
* when the supervisor is gone (this process was re-parented) the loop ends
  at once: nobody is left to drain to.

Pure control flow: the link, the parent check and the clock are passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from pipeline.transport.control import Drain, Heartbeat

logger = logging.getLogger(__name__)

HEARTBEAT_S = 0.5


class LoopEnd(str, Enum):
    DRAINED = "drained"  # told to drain, and every thing in flight was handled
    FINISHED = "finished"  # the stage had no more work of its own (capture after StopReading)
    ORPHANED = "orphaned"  # the supervisor is gone


class Link(Protocol):
    def hello(self) -> None: ...

    def send(self, message: object) -> None: ...

    def receive(self, timeout_s: float = 0.0) -> list[object]: ...


class Parent(Protocol):
    def parent_alive(self) -> bool: ...


class StageWork(Protocol):
    # How long the loop may wait for a command each turn: a stage that waits on its own socket in
    # ``work`` wants 0; one that has nothing else to wait on (capture) waits here instead.
    command_wait_s: float

    def handle(self, command: object) -> None:
        """A command from the supervisor other than ``Drain``."""

    def work(self, draining: bool) -> bool:
        """One turn of the stage's own work (waiting briefly for input); True when anything moved."""

    def heartbeat(self) -> Heartbeat:
        """What the supervisor should know now."""

    @property
    def finished(self) -> bool:
        """The stage has nothing left to do on its own and the loop may end."""


class FedBySocket:
    """A stage that waits for its input on a socket of its own, inside ``work``: the loop need not wait
    for commands, and the stage never finishes on its own (it ends when drained, or orphaned)."""

    command_wait_s = 0.0
    finished = False


class StageLoop:
    def __init__(self, name: str, link: Link | None, parent: Parent | None, drain_idle_s: float,
                 clock: Callable[[], float] = time.monotonic, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.name = name
        self._link = link
        self._parent = parent
        self._drain_idle_s = drain_idle_s
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self.draining = False

    def run(self, stage: StageWork) -> LoopEnd:
        if self._link is not None:
            self._link.hello()
        next_heartbeat = self._clock()
        idle_since: float | None = None
        while True:
            now = self._clock()
            if self._link is not None:
                for command in self._link.receive(stage.command_wait_s):
                    if isinstance(command, Drain):
                        self.draining = True
                    else:
                        stage.handle(command)
                if now >= next_heartbeat:
                    self._link.send(stage.heartbeat())
                    next_heartbeat = now + self._heartbeat_s
            if self._parent is not None and not self._parent.parent_alive():
                logger.error("%s: the supervisor is gone; stopping", self.name)
                return LoopEnd.ORPHANED
            busy = stage.work(self.draining)
            if stage.finished:
                return LoopEnd.FINISHED
            if not self.draining:
                continue
            if busy:
                idle_since = None
                continue
            now = self._clock()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= self._drain_idle_s:
                return LoopEnd.DRAINED
