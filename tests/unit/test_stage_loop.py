"""The one loop every stage process runs, driven by an injected clock, a scripted link and parent."""

from __future__ import annotations

from pipeline.stages.loop import HEARTBEAT_S, LoopEnd, StageLoop
from pipeline.transport.control import Drain, Heartbeat, RemoveStream, StopReading


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Link:
    """Records what the stage said; hands out scripted commands turn by turn."""

    def __init__(self, commands_by_turn: dict[int, list] | None = None) -> None:
        self.commands_by_turn = commands_by_turn or {}
        self.turn = 0
        self.said: list = []
        self.waits: list[float] = []

    def hello(self) -> None:
        self.said.append("hello")

    def send(self, message) -> None:
        self.said.append(message)

    def receive(self, timeout_s: float = 0.0) -> list:
        self.waits.append(timeout_s)
        self.turn += 1
        return self.commands_by_turn.get(self.turn, [])


class Parent:
    def __init__(self, dies_at_turn: int | None = None, link: Link | None = None) -> None:
        self.dies_at_turn = dies_at_turn
        self.link = link

    def parent_alive(self) -> bool:
        return self.dies_at_turn is None or self.link.turn < self.dies_at_turn


class Work:
    """A stage whose turns are scripted: busy on the turns listed, each turn taking ``turn_s`` of the clock."""

    def __init__(self, clock: Clock, busy_turns: set[int] = frozenset(), turn_s: float = 0.05,
                 finish_after: int | None = None, command_wait_s: float = 0.0) -> None:
        self.clock = clock
        self.busy_turns = busy_turns
        self.turn_s = turn_s
        self.finish_after = finish_after
        self.command_wait_s = command_wait_s
        self.turns = 0
        self.handled: list = []
        self.draining_seen: list[bool] = []

    def handle(self, command) -> None:
        self.handled.append(command)

    def work(self, draining: bool) -> bool:
        self.turns += 1
        self.draining_seen.append(draining)
        self.clock.now += self.turn_s
        return self.turns in self.busy_turns

    def heartbeat(self) -> Heartbeat:
        return Heartbeat("embed:0", detail={"turn": self.turns})

    @property
    def finished(self) -> bool:
        return self.finish_after is not None and self.turns >= self.finish_after


def test_hello_comes_first_then_a_heartbeat_at_once_and_every_period_after():
    clock = Clock()
    link = Link({40: [Drain()]})
    work = Work(clock, turn_s=0.0625)

    end = StageLoop("embed:0", link, None, drain_idle_s=0.0, clock=clock).run(work)

    assert end is LoopEnd.DRAINED
    assert link.said[0] == "hello"
    beats = [m for m in link.said[1:] if isinstance(m, Heartbeat)]
    assert beats[0].detail == {"turn": 0}  # before any work: the supervisor hears from a stage at once
    # Turn k starts at (k - 1) * 0.0625 s: over 40 turns, one at 0 s and then one every HEARTBEAT_S (0.5 s)
    # of stage time, at turns 9, 17, 25 and 33: no more, no fewer.
    assert HEARTBEAT_S == 0.5
    assert len(beats) == 5


def test_commands_other_than_drain_are_the_stages_business_and_drain_sets_draining():
    clock = Clock()
    link = Link({2: [RemoveStream("cam"), StopReading()], 4: [Drain()]})
    work = Work(clock)

    StageLoop("capture:0", link, None, drain_idle_s=0.1, clock=clock).run(work)

    assert work.handled == [RemoveStream("cam"), StopReading()]
    assert work.draining_seen[:4] == [False, False, False, True]


def test_a_drain_ends_only_after_the_stage_was_idle_for_its_drain_idle_s():
    clock = Clock()
    link = Link({1: [Drain()]})
    # Busy on turns 1-3 and again on 6: the quiet spell of turns 4-5 (0.125 s) is shorter than 0.25 s.
    work = Work(clock, busy_turns={1, 2, 3, 6}, turn_s=0.0625)

    end = StageLoop("temporal", link, None, drain_idle_s=0.25, clock=clock).run(work)

    assert end is LoopEnd.DRAINED
    # Idle from the end of turn 7; turns 8-11 make the 0.25 s quiet spell.
    assert work.turns == 11


def test_a_stage_not_told_to_drain_never_ends_for_being_idle():
    clock = Clock()
    link = Link({200: [Drain()]})
    work = Work(clock, busy_turns=set())

    StageLoop("overlay", link, None, drain_idle_s=0.0, clock=clock).run(work)

    assert work.turns == 200


def test_the_loop_ends_at_once_when_the_supervisor_is_gone():
    clock = Clock()
    link = Link()
    work = Work(clock, busy_turns=set(range(100)))

    end = StageLoop("embed:0", link, Parent(dies_at_turn=5, link=link), drain_idle_s=0.1, clock=clock).run(work)

    assert end is LoopEnd.ORPHANED
    assert work.turns == 4  # no work after the parent check failed


def test_a_stage_that_finished_its_own_work_ends_the_loop():
    clock = Clock()
    link = Link()
    work = Work(clock, finish_after=3, command_wait_s=0.1)

    end = StageLoop("capture:0", link, None, drain_idle_s=0.1, clock=clock).run(work)

    assert end is LoopEnd.FINISHED
    assert work.turns == 3
    assert link.waits == [0.1, 0.1, 0.1]  # a stage with no socket of its own waits for commands instead
