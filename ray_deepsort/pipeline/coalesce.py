"""Cross-caller batching for model actors: many small requests, one forward pass.

Ray runs the calls of a plain actor one after the other, so video workers that each send a few
frames would each get a forward pass of their own. A `Coalescer` lives in an asyncio actor:
calls that arrive while the model is busy (or within `max_wait_s` of an idle model) queue up and
then run together as one batch of up to `max_batch_size` units (crops, frames); every caller gets
back its own slice. Batches therefore mix the requests of many callers (videos, cameras) without
any caller waiting for a batch to fill.

`CoalescingEmbedderActor` is the ReID `EmbedderActor` with such a queue in front of the same
`FrameEmbedder`: one embedding implementation, whichever driver calls it. Start it with
`start_actors(..., embedder_class=CoalescingEmbedderActor)`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ray_deepsort.pipeline.actors import EmbedderActor
from ray_deepsort.pipeline.embedder import ModelChoice
from ray_deepsort.pipeline.types import EmbedBatchResult, EmbedItem

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _Request(Generic[ItemT]):
    items: list[ItemT]
    size: int
    future: asyncio.Future[Any]


@dataclass
class CoalescerStats:
    """Counters of one coalescer: how well requests were merged."""

    requests: int = 0
    batches: int = 0
    units: int = 0
    busy_seconds: float = 0.0

    @property
    def requests_per_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class Coalescer(Generic[ItemT, ResultT]):
    """Merge concurrent `submit(items)` calls into shared `run_batch(items)` calls.

    `run_batch` runs in a single worker thread (one batch at a time, the event loop stays free
    to queue new requests meanwhile). `split(result, parts)` cuts a batch result into one result
    per request, given each request's items. A request is never split across batches; a single
    request larger than `max_batch_size` runs alone.
    """

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], ResultT],
        split: Callable[[ResultT, list[list[ItemT]]], list[ResultT]],
        size_of: Callable[[ItemT], int],
        max_batch_size: int,
        max_wait_s: float = 0.002,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self._run_batch = run_batch
        self._split = split
        self._size_of = size_of
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = float(max_wait_s)
        self._queue: deque[_Request[ItemT]] = deque()
        self._queued_size = 0
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coalescer")
        self.stats = CoalescerStats()

    async def submit(self, items: Sequence[ItemT]) -> ResultT:
        """Queue `items` as one request and wait for its share of a batch result."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        request = _Request(
            list(items), int(sum(self._size_of(item) for item in items)), loop.create_future()
        )
        self._queue.append(request)
        self._queued_size += request.size
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return await request.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._arrived is not None
        while self._queue:
            deadline = loop.time() + self.max_wait_s
            while self._queued_size < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            parts = [request.items for request in batch]
            items = [item for part in parts for item in part]
            started = time.perf_counter()
            try:
                result = await loop.run_in_executor(self._executor, self._run_batch, items)
                results = self._split(result, parts)
                if len(results) != len(batch):
                    raise RuntimeError(f"split gave {len(results)} results for {len(batch)}")
            except Exception as error:  # every caller of the batch sees the failure
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            finally:
                self.stats.busy_seconds += time.perf_counter() - started
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.units += sum(request.size for request in batch)
            for request, part in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(part)

    def _take(self) -> list[_Request[ItemT]]:
        """Requests from the head of the queue up to `max_batch_size` units (at least one)."""
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and size + self._queue[0].size <= self.max_batch_size:
            request = self._queue.popleft()
            batch.append(request)
            size += request.size
        self._queued_size -= size
        return batch


def split_embed_result(
    result: EmbedBatchResult, parts: list[list[EmbedItem]]
) -> list[EmbedBatchResult]:
    """One `EmbedBatchResult` per request; the batch's timings are shared out by crop count."""
    crops = [sum(len(item.xyxy) for item in part) for part in parts]
    total_crops = sum(crops)
    total_items = sum(len(part) for part in parts)
    split: list[EmbedBatchResult] = []
    start = 0
    for part, part_crops in zip(parts, crops, strict=True):
        share = part_crops / total_crops if total_crops else len(part) / max(total_items, 1)
        split.append(
            EmbedBatchResult(
                outcomes=result.outcomes[start : start + len(part)],
                num_crops=part_crops,
                decode_seconds=result.decode_seconds * share,
                embed_seconds=result.embed_seconds * share,
            )
        )
        start += len(part)
    return split


class CoalescingEmbedderActor(EmbedderActor):
    """`EmbedderActor` whose `embed_coalesced` merges concurrent callers into shared batches.

    An asyncio actor (Ray gives it up to 1000 concurrent calls); the synchronous `embed` and
    `ready` of the base class still work and run on the event loop.
    """

    def __init__(
        self,
        choice: ModelChoice,
        max_batch_crops: int = 256,
        max_wait_ms: float = 2.0,
        metrics_tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(choice, metrics_tags)
        self._coalescer: Coalescer[EmbedItem, EmbedBatchResult] = Coalescer(
            self._embed_batch,
            split_embed_result,
            size_of=lambda item: max(len(item.xyxy), 1),
            max_batch_size=max_batch_crops,
            max_wait_s=max_wait_ms / 1000.0,
        )

    def _embed_batch(self, items: list[EmbedItem]) -> EmbedBatchResult:
        return EmbedderActor.embed(self, items)

    async def embed_coalesced(self, items: list[EmbedItem]) -> EmbedBatchResult:
        return await self._coalescer.submit(items)

    async def coalescer_stats(self) -> dict[str, float]:
        stats = self._coalescer.stats
        return {
            "requests": stats.requests,
            "batches": stats.batches,
            "crops": stats.units,
            "busy_seconds": stats.busy_seconds,
            "requests_per_batch": stats.requests_per_batch,
        }
