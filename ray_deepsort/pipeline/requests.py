"""One request planner for every driver: frames in, embed requests and track requests out.

The stream's ingest workers (Kafka messages) and the archive's video workers (decoded video
frames) both turn a group of frames into the same two kinds of calls: embed requests of at most
`max_embed_crops` crops, each for the least-loaded embedder, and per tracker shard the frames
it owns, in order, each naming the embed result and position that holds its embeddings. Frames
arrive as neutral `FrameRecord`s; the image may be encoded bytes (a message) or the decoded
array (a video frame), so nobody encodes a frame only for the embedder to decode it again.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.pipeline.types import EmbedItem, TrackRequest


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """One frame of one stream, whatever it came from: its track request (no embed slot yet)
    and the image its boxes are embedded from (encoded, or decoded BGR with "raw")."""

    request: TrackRequest
    image: bytes | np.ndarray | None = None
    image_format: str = "raw"

    def needs_embedding(self) -> bool:
        request = self.request
        return request.embeddings is None and self.image is not None and len(request.xyxy) > 0


@dataclass
class EmbedRequest:
    """One call to an embedder: its items and which embedder (least-loaded first)."""

    items: list[EmbedItem]
    crops: int
    embedder: int


@dataclass
class RequestPlan:
    """What to send: `embed_requests`, and per shard its track requests in frame order plus
    the embed requests its call needs (`embed_inputs`, in the order `embed_slot`s count)."""

    embed_requests: list[EmbedRequest] = field(default_factory=list)
    track_requests: dict[int, list[TrackRequest]] = field(default_factory=dict)
    embed_inputs: dict[int, list[int]] = field(default_factory=dict)


def plan_requests(
    frames: Sequence[FrameRecord],
    *,
    num_shards: int,
    num_embedders: int,
    max_embed_crops: int,
    first_embedder: int = 0,
) -> RequestPlan:
    """Group the frames that need ReID into embed requests of at most `max_embed_crops` crops
    (a frame is never split; one with more crops gets a request of its own), give each to the
    least-loaded of `num_embedders` (ties from `first_embedder` on, so callers that plan one
    request at a time rotate), and build every frame's `TrackRequest` for its shard. Without
    embedders nothing is embedded (motion-only, or the frames carry embeddings)."""
    plan = RequestPlan()
    slots = _embed_requests(plan, frames, num_embedders, max_embed_crops, first_embedder)
    per_shard: dict[int, list[TrackRequest]] = collections.defaultdict(list)
    inputs: dict[int, list[int]] = collections.defaultdict(list)
    for i, frame in enumerate(frames):
        request = frame.request
        shard = shard_of(request.stream_id, num_shards)
        if i in slots:
            request_id, position = slots[i]
            used = inputs[shard]
            if request_id not in used:
                used.append(request_id)
            request = dataclasses.replace(request, embed_slot=(used.index(request_id), position))
        per_shard[shard].append(request)
    plan.track_requests = dict(sorted(per_shard.items()))
    plan.embed_inputs = {shard: inputs[shard] for shard in plan.track_requests}
    return plan


def _embed_requests(
    plan: RequestPlan,
    frames: Sequence[FrameRecord],
    num_embedders: int,
    max_embed_crops: int,
    first_embedder: int,
) -> dict[int, tuple[int, int]]:
    """Fill `plan.embed_requests`; returns frame index -> (request, position in it)."""
    if num_embedders <= 0:
        return {}
    groups: list[list[int]] = []
    crops: list[int] = []
    for i, frame in enumerate(frames):
        if not frame.needs_embedding():
            continue
        if not groups or (crops[-1] + len(frame.request.xyxy) > max_embed_crops and groups[-1]):
            groups.append([])
            crops.append(0)
        groups[-1].append(i)
        crops[-1] += len(frame.request.xyxy)
    load = [(0, (k - first_embedder) % num_embedders, k) for k in range(num_embedders)]
    heapq.heapify(load)
    slots: dict[int, tuple[int, int]] = {}
    for request_id, members in enumerate(groups):
        busy, order, embedder = heapq.heappop(load)
        items = []
        for position, i in enumerate(members):
            frame, request = frames[i], frames[i].request
            assert frame.image is not None  # needs_embedding
            height, width = request.frame_shape or (None, None)
            items.append(EmbedItem(frame.image, frame.image_format, request.xyxy, width, height))
            slots[i] = (request_id, position)
        plan.embed_requests.append(EmbedRequest(items, crops[request_id], embedder))
        heapq.heappush(load, (busy + crops[request_id], order, embedder))
    return slots
