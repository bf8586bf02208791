"""Retrying broker operations (produce, commit) with capped exponential backoff.

The stream job outlives broker outages: a failed produce or offset commit is tried again after
`initial_s`, then twice as long each time up to `max_s`, until it succeeds. Only when one
operation has kept failing for `give_up_after_s` (0 = never) does the job fail with
`BrokerUnavailableError`, so an orchestrator or an operator notices an outage that does not end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


class BrokerUnavailableError(RuntimeError):
    """A produce or commit kept failing for longer than `job.broker_timeout_s`."""


@dataclass
class Backoff:
    """The retry schedule of one operation: `failed()` returns the next delay, `succeeded()`
    starts over. The delay after the n-th failure in a row is min(max_s, initial_s * 2**(n-1))."""

    initial_s: float
    max_s: float
    give_up_after_s: float = 0.0  # 0 = retry forever
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    failures: int = 0  # failures in a row
    failing_since: float | None = None

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.give_up_after_s < 0:
            raise ValueError(
                f"need 0 < initial_s <= max_s and give_up_after_s >= 0, got {self.initial_s}, "
                f"{self.max_s}, {self.give_up_after_s}"
            )

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` (>= 1) failures in a row."""
        # Exponent capped so that a long outage cannot overflow the float.
        return min(self.max_s, self.initial_s * 2.0 ** min(max(failures, 1) - 1, 60))

    def failed(self, what: str, error: BaseException | str) -> float:
        """Record a failure of `what`; the delay before the next try.

        Raises `BrokerUnavailableError` once `what` has been failing for `give_up_after_s`.
        """
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        failing_for = now - self.failing_since
        if self.give_up_after_s and failing_for >= self.give_up_after_s:
            raise BrokerUnavailableError(
                f"{what} kept failing for {failing_for:.0f}s ({self.failures + 1} attempts; "
                f"job.broker_timeout_s={self.give_up_after_s:g}): {error}"
            )
        self.failures += 1
        return self.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0
        self.failing_since = None
