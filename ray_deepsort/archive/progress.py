"""Progress of an archive run: workers report to a tiny actor, the driver draws bars or logs.

On a terminal: an overall bar (videos, with frames and frames/s) and one bar per running video
(frames of that video). Elsewhere (logs, `ray job submit`): one line every `log_interval_s`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger("ray_deepsort.archive")


class ProgressBoard:
    """Ray actor body: the latest (frames done, frames declared) of each running video."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[int, int]] = {}

    def update(self, key: str, done: int, total: int) -> None:
        self._state[key] = (int(done), int(total))

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return dict(self._state)


class ProgressDisplay:
    """Draws the run's progress; `mode` is "bar", "log", "none" or "auto" (bar on a TTY)."""

    def __init__(self, total_videos: int, mode: str = "auto", log_interval_s: float = 10.0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode = mode
        self.total_videos = total_videos
        self.log_interval_s = log_interval_s
        self.started = time.monotonic()
        self._last_log = self.started
        self._bars: dict[str, Any] = {}
        self._positions: dict[str, int] = {}
        self._running: set[str] = set()
        self._free_positions: list[int] = []
        self._overall: Any = None
        self.videos_done = 0
        self.frames_done = 0  # frames of finished videos
        if self.mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: fall back to log lines
                self.mode = "log"
            else:
                self._tqdm = tqdm
                self._overall = tqdm(
                    total=total_videos, desc="videos", unit="video", position=0, leave=True
                )

    def started_video(self, key: str) -> None:
        self._running.add(key)
        if self.mode != "bar":
            return
        position = self._free_positions.pop(0) if self._free_positions else len(self._bars) + 1
        self._positions[key] = position
        self._bars[key] = self._tqdm(
            total=None, desc=key[:30], unit="frame", position=position, leave=False
        )

    def finished_video(self, key: str, frames: int) -> None:
        self._running.discard(key)
        self.videos_done += 1
        self.frames_done += frames
        bar = self._bars.pop(key, None)
        if bar is not None:
            self._free_positions.append(self._positions.pop(key))
            self._free_positions.sort()
            bar.close()
        if self._overall is not None:
            self._overall.update(1)

    def refresh(self, snapshot: dict[str, tuple[int, int]]) -> None:
        """Redraw from the board's snapshot (frames done so far of each running video)."""
        frames = self.frames_done + sum(
            done for key, (done, _) in snapshot.items() if key in self._running
        )
        elapsed = max(time.monotonic() - self.started, 1e-9)
        if self.mode == "bar":
            for key, bar in self._bars.items():
                done, total = snapshot.get(key, (0, 0))
                if total and bar.total != total:
                    bar.total = total
                bar.n = done
                bar.refresh()
            self._overall.set_postfix_str(f"frames={frames} fps={frames / elapsed:.1f}")
        elif self.mode == "log" and time.monotonic() - self._last_log >= self.log_interval_s:
            self._last_log = time.monotonic()
            logger.info(
                "progress: %d/%d videos, %d running, %d frames, %.1f frames/s",
                self.videos_done,
                self.total_videos,
                len(self._running),
                frames,
                frames / elapsed,
            )

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        if self._overall is not None:
            self._overall.close()
