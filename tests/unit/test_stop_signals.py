"""StopSignals: a stop signal repeated within the window is the same request; a later one stops at once."""

from __future__ import annotations

import os
import signal

from pipeline.supervision.signals import SignalInbox, StopDecision, StopSignals


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_signal_drains() -> None:
    assert StopSignals(2.0, Clock()).decide() is StopDecision.DRAIN


def test_the_same_signal_to_the_process_and_then_its_group_is_one_request() -> None:
    clock = Clock()
    signals = StopSignals(2.0, clock)
    signals.decide()
    clock.now += 0.001
    assert signals.decide() is StopDecision.SAME_REQUEST


def test_a_repeat_at_the_edge_of_the_window_is_still_the_same_request() -> None:
    clock = Clock()
    signals = StopSignals(2.0, clock)
    signals.decide()
    clock.now += 2.0
    assert signals.decide() is StopDecision.SAME_REQUEST


def test_a_signal_after_the_window_stops_at_once() -> None:
    clock = Clock()
    signals = StopSignals(2.0, clock)
    signals.decide()
    clock.now += 3.0
    assert signals.decide() is StopDecision.STOP_NOW


def test_repeats_cannot_push_the_window_on_it_counts_from_the_first_signal() -> None:
    clock = Clock()
    signals = StopSignals(2.0, clock)
    decisions = [signals.decide()]
    for _ in range(3):
        clock.now += 0.9
        decisions.append(signals.decide())
    assert decisions == [StopDecision.DRAIN, StopDecision.SAME_REQUEST, StopDecision.SAME_REQUEST,
                         StopDecision.STOP_NOW]


def test_a_window_of_zero_makes_every_second_signal_a_stop_now() -> None:
    clock = Clock()
    signals = StopSignals(0.0, clock)
    signals.decide()
    clock.now += 0.01
    assert signals.decide() is StopDecision.STOP_NOW


def test_the_inbox_records_each_signal_with_its_meaning_for_the_loop() -> None:
    clock = Clock()
    inbox = SignalInbox(StopSignals(2.0, clock))
    inbox.on_signal(signal.SIGTERM)
    inbox.on_signal(signal.SIGTERM)
    clock.now += 5
    inbox.on_signal(signal.SIGHUP)
    assert inbox.take() == [("SIGTERM", StopDecision.DRAIN), ("SIGTERM", StopDecision.SAME_REQUEST),
                            ("SIGHUP", StopDecision.STOP_NOW)]
    assert inbox.take() == []


def test_installed_handlers_take_sighup_as_a_stop() -> None:
    from pipeline.supervision.signals import STOP_SIGNALS, install_signal_handlers

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    inbox = SignalInbox(StopSignals(2.0, Clock()))
    try:
        install_signal_handlers(inbox)
        os.kill(os.getpid(), signal.SIGHUP)
        assert inbox.take() == [("SIGHUP", StopDecision.DRAIN)]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
