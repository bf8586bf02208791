"""`StallWatch`: a main loop that stops coming back dumps every thread's stack, one that keeps
ticking dumps nothing."""

from __future__ import annotations

import time
from pathlib import Path

from ray_deepsort.stream.progress import StallWatch


def test_a_stalled_loop_dumps_its_stacks_until_stopped(tmp_path: Path) -> None:
    out = tmp_path / "stacks.txt"
    with out.open("w") as file:
        watch = StallWatch(after_s=0.2, file=file)
        watch.tick()
        time.sleep(0.7)  # "blocked": no tick
        watch.stop()
        written = out.read_text()
        time.sleep(0.3)
        assert out.read_text() == written  # stopped: no more dumps
    assert "Timeout (0:00:00.200000)!" in written
    assert "test_a_stalled_loop_dumps_its_stacks_until_stopped" in written  # where it waits
    assert written.count("Timeout") >= 2  # again while it stays away


def test_a_ticking_loop_dumps_nothing(tmp_path: Path) -> None:
    out = tmp_path / "stacks.txt"
    with out.open("w") as file:
        watch = StallWatch(after_s=1.0, file=file)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            watch.tick()
            time.sleep(0.02)
        watch.stop()
        time.sleep(0.5)
    assert out.read_text() == ""
