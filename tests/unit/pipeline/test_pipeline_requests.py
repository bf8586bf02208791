"""The request planner both drivers use: embed request grouping, embedder choice, slots."""

from __future__ import annotations

import numpy as np

from ray_deepsort.pipeline.requests import FrameRecord, plan_requests
from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.pipeline.types import SourcePosition, TrackRequest


def _frame(
    stream: str, index: int, boxes: int, *, image: bool = True, embedded: bool = False
) -> FrameRecord:
    request = TrackRequest(
        stream_id=stream,
        frame_index=index,
        timestamp=index / 10,
        xyxy=np.tile(np.array([[0, 0, 10, 20]], np.float32), (boxes, 1)),
        confidence=np.ones(boxes, np.float32),
        class_id=np.zeros(boxes, np.int64),
        position=SourcePosition("frames", 0, index),
        frame_shape=(90, 160),
        embeddings=np.ones((boxes, 4), np.float32) if embedded else None,
        owner="w1",
    )
    return FrameRecord(request, np.zeros((90, 160, 3), np.uint8) if image else None)


def test_frames_are_grouped_into_requests_and_each_finds_its_embeddings() -> None:
    streams = [f"cam{k}" for k in range(6)]
    frames = [
        _frame(streams[0], 0, 3),
        _frame(streams[1], 0, 4),
        _frame(streams[2], 0, 0),  # no boxes: nothing to embed
        _frame(streams[3], 0, 2, embedded=True),  # embeddings from upstream
        _frame(streams[4], 0, 9),  # more than the limit: a request of its own
        _frame(streams[5], 0, 2, image=False),  # no image: motion only
        _frame(streams[0], 1, 5),
    ]
    plan = plan_requests(frames, num_shards=2, num_embedders=2, max_embed_crops=8)
    assert [r.crops for r in plan.embed_requests] == [7, 9, 5]
    # Least-loaded first: 7 -> embedder 0, 9 -> embedder 1, 5 -> embedder 0 (7 < 9).
    assert [r.embedder for r in plan.embed_requests] == [0, 1, 0]
    assert all(item.image_format == "raw" for r in plan.embed_requests for item in r.items)
    sent = sorted(
        (request.stream_id, request.frame_index)
        for requests in plan.track_requests.values()
        for request in requests
    )
    assert sent == sorted((f.request.stream_id, f.request.frame_index) for f in frames)
    for shard, requests in plan.track_requests.items():
        for request in requests:
            assert shard_of(request.stream_id, 2) == shard and request.owner == "w1"
            frame = next(
                f
                for f in frames
                if (f.request.stream_id, f.request.frame_index)
                == (request.stream_id, request.frame_index)
            )
            if not frame.needs_embedding():
                assert request.embed_slot is None
                continue
            # The slot names one of this shard call's embed inputs and the frame's item in it.
            input_index, position = request.embed_slot
            embed = plan.embed_requests[plan.embed_inputs[shard][input_index]]
            assert embed.items[position].xyxy is frame.request.xyxy
        frame_order = [(r.stream_id, r.frame_index) for r in requests]
        assert frame_order == [
            (f.request.stream_id, f.request.frame_index)
            for f in frames
            if shard_of(f.request.stream_id, 2) == shard
        ]


def test_without_embedders_nothing_is_embedded_and_ties_rotate() -> None:
    frames = [_frame("cam0", 0, 3)]
    plan = plan_requests(frames, num_shards=1, num_embedders=0, max_embed_crops=8)
    assert plan.embed_requests == [] and plan.track_requests[0][0].embed_slot is None
    chosen = [
        plan_requests(frames, num_shards=1, num_embedders=3, max_embed_crops=8, first_embedder=k)
        .embed_requests[0]
        .embedder
        for k in range(5)
    ]
    assert chosen == [0, 1, 2, 0, 1]  # one request per call: callers rotate with first_embedder
