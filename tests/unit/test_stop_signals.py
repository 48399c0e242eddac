"""StopSignals: a stop signal repeated within the window is the same request; a later one stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from pipeline.supervision.signals import SignalInbox, StopDecision, StopSignals
from tests.support.fakes import ManualClock


def test_the_first_signal_drains() -> None:
    assert StopSignals(2.0, ManualClock(100.0)).decide() is StopDecision.DRAIN


@pytest.mark.parametrize("after_s, decision", [
    (0.001, StopDecision.SAME_REQUEST),  # the same signal to the process and then its group: one request
    (2.0, StopDecision.SAME_REQUEST),  # a repeat at the edge of the window is still the same request
    (3.0, StopDecision.STOP_NOW),  # a signal after the window stops at once
])
def test_a_second_signal_within_the_window_is_the_same_request_and_a_later_one_stops_at_once(after_s, decision):
    clock = ManualClock(100.0)
    signals = StopSignals(2.0, clock)
    signals.decide()
    clock.now += after_s
    assert signals.decide() is decision


def test_repeats_cannot_push_the_window_on_it_counts_from_the_first_signal() -> None:
    clock = ManualClock(100.0)
    signals = StopSignals(2.0, clock)
    decisions = [signals.decide()]
    for _ in range(3):
        clock.now += 0.9
        decisions.append(signals.decide())
    assert decisions == [StopDecision.DRAIN, StopDecision.SAME_REQUEST, StopDecision.SAME_REQUEST,
                         StopDecision.STOP_NOW]


def test_a_window_of_zero_makes_every_second_signal_a_stop_now() -> None:
    clock = ManualClock(100.0)
    signals = StopSignals(0.0, clock)
    signals.decide()
    clock.now += 0.01
    assert signals.decide() is StopDecision.STOP_NOW


def test_the_inbox_records_each_signal_with_its_meaning_for_the_loop() -> None:
    clock = ManualClock(100.0)
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
    inbox = SignalInbox(StopSignals(2.0, ManualClock(100.0)))
    try:
        install_signal_handlers(inbox)
        os.kill(os.getpid(), signal.SIGHUP)
        assert inbox.take() == [("SIGHUP", StopDecision.DRAIN)]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
