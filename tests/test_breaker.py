"""CircuitBreaker with a fake clock: opens after N consecutive failures, fails fast for the
cool-down, lets one probe through half-open, and reports its state."""

from __future__ import annotations

import pytest

from service.breaker import CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Outage(Exception):
    pass


class Recorder:
    def __init__(self) -> None:
        self.states: list[bool] = []
        self.rejected = 0

    def state(self, open_: bool) -> None:
        self.states.append(open_)

    def reject(self) -> None:
        self.rejected += 1


def breaker(clock: Clock, recorder: Recorder, failures: int = 3, reset_s: float = 2.0) -> CircuitBreaker:
    return CircuitBreaker(failures, reset_s, clock=clock, on_state=recorder.state, on_reject=recorder.reject)


def fail(b: CircuitBreaker) -> None:
    with pytest.raises(Outage), b.call((Outage,)):
        raise Outage


def succeed(b: CircuitBreaker) -> None:
    with b.call((Outage,)):
        pass


def refused(b: CircuitBreaker) -> bool:
    ran = False
    try:
        with b.call((Outage,)):
            ran = True
    except CircuitOpen:
        return True
    assert ran
    return False


def test_opens_after_n_consecutive_failures_and_fails_fast() -> None:
    clock, recorder = Clock(), Recorder()
    b = breaker(clock, recorder)
    fail(b)
    fail(b)
    assert b.state == "closed" and recorder.states == []
    fail(b)
    assert b.state == "open" and recorder.states == [True]
    assert refused(b) and refused(b)
    assert recorder.rejected == 2


def test_a_success_resets_the_count() -> None:
    clock, recorder = Clock(), Recorder()
    b = breaker(clock, recorder)
    fail(b)
    fail(b)
    succeed(b)
    fail(b)
    fail(b)
    assert b.state == "closed"


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    clock, recorder = Clock(), Recorder()
    b = breaker(clock, recorder)
    for _ in range(3):
        fail(b)
    clock.now += 1.9
    assert refused(b)
    clock.now += 0.1
    assert b.state == "half_open"
    with b.call((Outage,)):  # the probe, in flight: every other call is still refused
        assert refused(b)
    assert b.state == "closed" and recorder.states == [True, False]
    assert not refused(b)


def test_a_failed_probe_opens_for_another_cool_down() -> None:
    clock, recorder = Clock(), Recorder()
    b = breaker(clock, recorder)
    for _ in range(3):
        fail(b)
    clock.now += 2.0
    fail(b)  # the probe
    assert b.state == "open" and recorder.states == [True]
    clock.now += 1.0
    assert refused(b)
    clock.now += 1.0
    assert not refused(b)  # next probe, which succeeds
    assert b.state == "closed"


def test_other_exceptions_count_as_neither_and_free_the_probe() -> None:
    clock, recorder = Clock(), Recorder()
    b = breaker(clock, recorder)
    for _ in range(3):
        fail(b)
    clock.now += 2.0
    with pytest.raises(KeyError), b.call((Outage,)):
        raise KeyError("a bad command, not an outage")
    assert b.state == "half_open"
    assert not refused(b)  # the probe slot was freed


def test_zero_failures_turns_it_off() -> None:
    clock, recorder = Clock(), Recorder()
    b = breaker(clock, recorder, failures=0)
    for _ in range(10):
        fail(b)
    assert b.state == "closed" and not refused(b) and recorder.states == []
