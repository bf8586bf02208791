"""The in-flight window both drivers use: capacity, strictly in-order finishing, failures."""

from __future__ import annotations

import pytest

from ray_deepsort.pipeline.inflight import InflightWindow


class FakeRefs:
    """Refs are strings; `done` says which resolved; a ref in `errors` raises when fetched."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.errors: dict[str, Exception] = {}
        self.waits: list[float | None] = []

    def wait(self, refs: list[str], num_returns: int, timeout: float | None) -> tuple[list, list]:
        self.waits.append(timeout)
        ready = [ref for ref in refs if ref in self.done]
        return ready, [ref for ref in refs if ref not in self.done]

    def get(self, refs: list[str]) -> list[str]:
        for ref in refs:
            if ref in self.errors:
                raise self.errors[ref]
        return [f"result of {ref}" for ref in refs]


def test_units_finish_in_order_only_when_all_their_refs_resolved() -> None:
    refs = FakeRefs()
    window: InflightWindow[tuple[str, list[str]]] = InflightWindow(
        2, lambda unit: unit[1], refs.wait, refs.get
    )
    first, second = ("a", ["a1", "a2"]), ("b", ["b1"])
    window.append(first)
    assert not window.full
    window.append(second)
    assert window.full and len(window) == 2 and window.head() is first
    refs.done |= {"a1", "b1"}  # the second unit is done, the first not yet
    assert window.pop_ready(block=False, timeout=0.5) is None and refs.waits == [0.5]
    refs.done.add("a2")
    assert window.pop_ready(block=True) == (first, ["result of a1", "result of a2"])
    assert refs.waits[-1] is None  # blocking waits without a timeout
    assert window.pop_ready(block=False) == (second, ["result of b1"])
    assert window.pop_ready(block=True) is None and window.head() is None


def test_a_failed_ref_raises_and_the_unit_stays_until_cleared() -> None:
    refs = FakeRefs()
    window: InflightWindow[str] = InflightWindow(3, lambda unit: [unit], refs.wait, refs.get)
    for unit in ("x", "y"):
        window.append(unit)
    refs.done.add("x")
    refs.errors["x"] = RuntimeError("actor died")
    with pytest.raises(RuntimeError, match="actor died"):
        window.pop_ready(block=True)
    assert list(window) == ["x", "y"]
    assert window.clear() == ["x", "y"] and len(window) == 0
    empty: InflightWindow[str] = InflightWindow(1, lambda unit: [], refs.wait, refs.get)
    empty.append("no refs")
    assert empty.pop_ready(block=False) == ("no refs", [])
    with pytest.raises(ValueError, match="capacity"):
        InflightWindow(0, lambda unit: [])
