"""Cross-caller batching (`Coalescer`) and the detector plugin protocol, without Ray."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import numpy as np
import pytest

from ray_deepsort.core import Detections
from ray_deepsort.pipeline.coalesce import Coalescer, split_embed_result
from ray_deepsort.pipeline.detector import (
    DetectorPluginError,
    DetectorSpec,
    frame_detections,
    load_detector,
    resolve_target,
    run_detector,
)
from ray_deepsort.pipeline.types import EmbedBatchResult, EmbedItem, EmbedOutcome


def _list_split(result: list[int], parts: list[list[int]]) -> list[list[int]]:
    out, start = [], 0
    for part in parts:
        out.append(result[start : start + len(part)])
        start += len(part)
    return out


class _Recorder:
    """A batch function that records its batches; the first call blocks until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        if not self.batches:
            self.release.wait(5)
        self.batches.append(list(items))
        if any(item < 0 for item in items):
            raise ValueError("negative item")
        return [10 * item for item in items]


def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    recorder = _Recorder()

    async def scenario() -> list[list[int]]:
        coalescer = Coalescer(recorder, _list_split, size_of=lambda _: 1, max_batch_size=5)
        first = asyncio.ensure_future(coalescer.submit([1]))
        await asyncio.sleep(0.05)  # the model is now busy with [1]; the others queue up
        rest = [asyncio.ensure_future(coalescer.submit(r)) for r in ([2, 3], [4], [5, 6], [7])]
        await asyncio.sleep(0.05)
        recorder.release.set()
        results = await asyncio.gather(first, *rest)
        assert coalescer.stats.requests == 5 and coalescer.stats.units == 7
        return results

    results = asyncio.run(scenario())
    assert results == [[10], [20, 30], [40], [50, 60], [70]]
    # [1] ran alone; the queued requests were merged up to 5 units, never split.
    assert recorder.batches == [[1], [2, 3, 4, 5, 6], [7]]


def test_a_failing_batch_fails_its_callers_only() -> None:
    recorder = _Recorder()
    recorder.release.set()

    async def scenario() -> tuple[list[object], list[int]]:
        coalescer = Coalescer(
            recorder, _list_split, size_of=lambda _: 1, max_batch_size=2, max_wait_s=0.05
        )
        outcomes = await asyncio.gather(
            coalescer.submit([1]), coalescer.submit([-1]), return_exceptions=True
        )
        later = await coalescer.submit([3])
        return list(outcomes), later

    outcomes, later = asyncio.run(scenario())
    assert all(isinstance(o, ValueError) for o in outcomes)  # same batch, same failure
    assert later == [30]  # the queue keeps working


def test_oversized_request_runs_alone() -> None:
    recorder = _Recorder()
    recorder.release.set()

    async def scenario() -> list[list[int]]:
        coalescer = Coalescer(recorder, _list_split, size_of=lambda _: 1, max_batch_size=2)
        return await asyncio.gather(coalescer.submit([1, 2, 3]), coalescer.submit([4]))

    assert asyncio.run(scenario()) == [[10, 20, 30], [40]]
    assert recorder.batches == [[1, 2, 3], [4]]


def test_invalid_coalescer_settings() -> None:
    with pytest.raises(ValueError):
        Coalescer(list, _list_split, size_of=len, max_batch_size=0)
    with pytest.raises(ValueError):
        Coalescer(list, _list_split, size_of=len, max_batch_size=1, max_wait_s=-1)


def test_split_embed_result_shares_time_by_crops() -> None:
    def item(n: int) -> EmbedItem:
        return EmbedItem(b"", "bmp", np.zeros((n, 4), np.float32))

    outcomes = [EmbedOutcome(np.full((n, 2), n, np.float32)) for n in (1, 3, 0)]
    result = EmbedBatchResult(outcomes, num_crops=4, decode_seconds=0.4, embed_seconds=0.8)
    first, second = split_embed_result(result, [[item(1)], [item(3), item(0)]])
    assert first.outcomes == outcomes[:1] and second.outcomes == outcomes[1:]
    assert (first.num_crops, second.num_crops) == (1, 3)
    assert first.embed_seconds == pytest.approx(0.2) and second.embed_seconds == pytest.approx(0.6)
    assert second.decode_seconds == pytest.approx(0.3)


# ------------------------------------------------------------------------- detector plugins


class _CountingDetector:
    """A plugin class: built once with keyword arguments, then called with batches."""

    instances = 0

    def __init__(self, score: float = 0.5) -> None:
        type(self).instances += 1
        self.score = score

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        return [
            Detections(
                xyxy=np.array([[0, 0, f.shape[1] / 2, f.shape[0] / 2]], np.float32),
                confidence=np.array([self.score]),
            )
            for f in frames
        ]


def _function_detector(frames: list[np.ndarray], boxes: int = 1) -> list[Detections]:
    return [
        Detections(xyxy=np.tile([[1, 2, 3, 4]], (boxes, 1)), data={"stream": ["a", "b"][:boxes]})
        for _ in frames
    ]


@pytest.fixture
def plugin_module() -> types.ModuleType:
    module = types.ModuleType("archive_test_plugins")
    module.CountingDetector = _CountingDetector  # type: ignore[attr-defined]
    module.function_detector = _function_detector  # type: ignore[attr-defined]
    module.broken = lambda frames: frames[:1]  # type: ignore[attr-defined]
    module.not_callable = 3  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_detector_plugins_by_class_and_function(plugin_module: types.ModuleType) -> None:
    frames = [np.zeros((20, 40, 3), np.uint8)] * 3
    detector = load_detector(DetectorSpec("archive_test_plugins:CountingDetector", {"score": 0.9}))
    results = run_detector(detector, frames)
    assert _CountingDetector.instances == 1
    assert len(results) == 3
    np.testing.assert_allclose(results[0].xyxy, [[0, 0, 20, 10]])
    assert results[0].confidence.tolist() == pytest.approx([0.9])
    assert results[0].stream is None
    function = load_detector(DetectorSpec("archive_test_plugins:function_detector", {"boxes": 2}))
    streamed = run_detector(function, frames[:1])[0]
    assert streamed.stream.tolist() == ["a", "b"]
    assert streamed.class_id.tolist() == [0, 0] and streamed.confidence.tolist() == [1.0, 1.0]


def test_detector_protocol_errors(plugin_module: types.ModuleType) -> None:
    broken = load_detector(DetectorSpec("archive_test_plugins:broken"))
    with pytest.raises(DetectorPluginError, match="1 results for a batch of 2"):
        run_detector(broken, [np.zeros((4, 4, 3), np.uint8)] * 2)
    with pytest.raises(DetectorPluginError, match="module:callable"):
        resolve_target("archive_test_plugins")
    with pytest.raises(DetectorPluginError, match="cannot import"):
        resolve_target("no_such_module_xyz:thing")
    with pytest.raises(DetectorPluginError, match="no attribute"):
        resolve_target("archive_test_plugins:missing")
    with pytest.raises(DetectorPluginError, match="not callable"):
        resolve_target("archive_test_plugins:not_callable")
    with pytest.raises(DetectorPluginError, match=r"must be ray_deepsort\.Detections"):
        frame_detections([[1, 2, 3, 4]])


def test_supervision_results_are_accepted() -> None:
    supervision = pytest.importorskip("supervision")
    result = supervision.Detections(
        xyxy=np.array([[1.0, 2.0, 3.0, 4.0]]),
        confidence=np.array([0.7]),
        class_id=np.array([2]),
        data={"stream": np.array(["left"])},
    )
    converted = frame_detections(result)
    assert converted.class_id.tolist() == [2] and converted.stream.tolist() == ["left"]
