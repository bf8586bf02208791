"""The in-flight window both drivers use: work sent to actors, finished strictly in order.

A stream ingest worker's micro-batches and an archive video worker's frame groups are both
units whose results arrive as Ray ObjectRefs. At most `capacity` are in flight (back-pressure:
the caller waits instead of taking more input), and a unit is handed back only once it and
every unit before it are done, so outputs are written in input order.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

UnitT = TypeVar("UnitT")


def ray_wait(refs: list[Any], num_returns: int, timeout: float | None) -> tuple[list, list]:
    """`ray.wait` (imported here so that callers without Ray can pass stand-ins)."""
    import ray

    return ray.wait(refs, num_returns=num_returns, timeout=timeout)


def ray_get(refs: list[Any]) -> list[Any]:
    """`ray.get` of a list."""
    import ray

    return list(ray.get(refs))


class InflightWindow(Generic[UnitT]):
    """Units submitted and not finished, oldest first (`refs_of(unit)`: the refs it waits for).

    `wait` / `get` default to `ray.wait` / `ray.get`; unit tests pass fakes.
    """

    def __init__(
        self,
        capacity: int,
        refs_of: Callable[[UnitT], list[Any]],
        wait: Callable[[list[Any], int, float | None], tuple[list, list]] = ray_wait,
        get: Callable[[list[Any]], list[Any]] = ray_get,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.refs_of = refs_of
        self.wait = wait
        self.get = get
        self.units: collections.deque[UnitT] = collections.deque()

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[UnitT]:
        return iter(self.units)

    @property
    def full(self) -> bool:
        return len(self.units) >= self.capacity

    def append(self, unit: UnitT) -> None:
        self.units.append(unit)

    def head(self) -> UnitT | None:
        return self.units[0] if self.units else None

    def pop_ready(
        self, block: bool, timeout: float | None = None
    ) -> tuple[UnitT, list[Any]] | None:
        """The oldest unit and its results once all its refs resolved (waiting for them when
        `block`, else up to `timeout` seconds); None when not yet, or none in flight. A failed
        ref raises here and the unit stays in flight (the caller recovers or drops it)."""
        if not self.units:
            return None
        refs = self.refs_of(self.units[0])
        if refs:
            ready, _ = self.wait(refs, len(refs), None if block else (timeout or 0))
            if len(ready) < len(refs):
                return None
        results = self.get(refs) if refs else []
        return self.units.popleft(), results

    def clear(self) -> list[UnitT]:
        """Forget every unit in flight; returns them, oldest first."""
        dropped = list(self.units)
        self.units.clear()
        return dropped
