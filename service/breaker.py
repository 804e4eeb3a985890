"""A circuit breaker: after enough consecutive failures, calls fail fast for a cool-down.

States: ``closed`` (calls go through; ``failures`` consecutive failures open it), ``open``
(every call fails at once with ``CircuitOpen``, no network call, until ``reset_s`` has passed),
``half_open`` (one probe call goes through, the others still fail fast; the probe's success
closes the breaker, its failure opens it for another ``reset_s``). A dead dependency then costs
one timeout per cool-down instead of one per request.

Not thread-safe: use one breaker from one event loop. ``failures=0`` turns it off (every call
goes through; nothing is counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitOpen(Exception):
    """The call was not made: the breaker is open (or half-open with its probe in flight)."""


class CircuitBreaker:
    """Counts outcomes of ``call`` blocks; see the module docstring for the states.

    ``on_state(open)`` is told whenever the breaker starts or stops refusing calls (half-open
    counts as open); ``on_reject()`` once per call refused.
    """

    def __init__(
        self,
        failures: int,
        reset_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_state: Callable[[bool], None] | None = None,
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        if failures < 0 or reset_s < 0:
            raise ValueError("failures and reset_s must not be negative")
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._on_state = on_state
        self._on_reject = on_reject
        self._consecutive = 0
        self._opened_at: float | None = None  # None while closed
        self._probing = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    @contextmanager
    def call(self, failure: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Guards one call: raises ``CircuitOpen`` instead of running the block when refused.

        An exception of a ``failure`` type counts as a failure (and propagates); leaving the
        block normally is a success; any other exception (a cancellation, a bad command)
        counts as neither, and frees the half-open probe slot for the next call.
        """
        if self._threshold == 0:
            yield
            return
        probe = self._admit()
        try:
            yield
        except failure:
            self._failed()
            raise
        else:
            self._succeeded()
        finally:
            if probe:
                self._probing = False

    def _admit(self) -> bool:
        """True when this call is the half-open probe; raises ``CircuitOpen`` when refused."""
        state = self.state
        if state == "closed":
            return False
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        if self._on_reject is not None:
            self._on_reject()
        raise CircuitOpen(f"circuit open after {self._threshold} consecutive failures; retrying later")

    def _failed(self) -> None:
        self._consecutive += 1
        if self._opened_at is not None or self._consecutive >= self._threshold:
            was_closed = self._opened_at is None
            self._opened_at = self._clock()  # a failed probe restarts the cool-down
            if was_closed and self._on_state is not None:
                self._on_state(True)

    def _succeeded(self) -> None:
        self._consecutive = 0
        if self._opened_at is not None:
            self._opened_at = None
            if self._on_state is not None:
                self._on_state(False)
