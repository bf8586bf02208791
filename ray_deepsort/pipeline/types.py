"""Plain data passed between the driver, embedder actors and tracker shards (Ray-serialisable)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SourcePosition:
    """Where a frame came from: Kafka (topic, partition, offset) or a file (path, 0, frame)."""

    source: str
    partition: int
    offset: int


@dataclass(frozen=True, eq=False)
class EmbedItem:
    """One frame for an embedder: the image and the boxes to embed.

    `image` is the encoded image (JPEG, PNG, ... as `image_format` names it), or the decoded
    BGR uint8 array [H, W, 3] with `image_format` "raw": a process that decoded the frame
    already (the archive's video workers) sends the pixels instead of encoding them again.
    """

    image: bytes | np.ndarray
    image_format: str
    xyxy: np.ndarray  # float32 [N, 4]
    width: int | None = None  # declared size; a decoded image of another size is an error
    height: int | None = None


@dataclass(frozen=True, eq=False)
class EmbedOutcome:
    """Embeddings [N, D] for one `EmbedItem` (zero rows for boxes outside the image), or why not."""

    embeddings: np.ndarray | None
    error: str | None = None


@dataclass(frozen=True, eq=False)
class EmbedBatchResult:
    """What `FrameEmbedder.embed` returns for one request: per-frame outcomes plus timings."""

    outcomes: list[EmbedOutcome]
    num_crops: int
    decode_seconds: float
    embed_seconds: float


@dataclass(frozen=True, eq=False)
class TrackRequest:
    """One frame for a tracker shard.

    Appearance comes from `embeddings` (precomputed upstream), or from an embedder result passed
    alongside the request (`embed_slot` = (index of that result among the call's results,
    position of this frame in it)), or from nowhere (motion-only).
    """

    stream_id: str
    frame_index: int
    timestamp: float
    xyxy: np.ndarray  # float32 [N, 4]
    confidence: np.ndarray  # float32 [N]
    class_id: np.ndarray  # int64 [N]
    position: SourcePosition
    frame_shape: tuple[int, int] | None = None  # (height, width) when known
    embeddings: np.ndarray | None = None
    embed_slot: tuple[int, int] | None = None
    # The stream's state is in checkpoint storage (restored after a restart, or evicted while
    # idle): the shard loads it from there before tracking this frame.
    restore: bool = False
    # Who sends the stream's frames (an ingest worker's token): a previous owner's late drop
    # never removes the state a new owner has restored on the same shard.
    owner: str = ""


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Tracker output for one frame: every input detection with its `tracker_id` (-1 = none)."""

    stream_id: str
    frame_index: int
    timestamp: float
    xyxy: np.ndarray  # float32 [N, 4]
    confidence: np.ndarray  # float32 [N]
    class_id: np.ndarray  # int64 [N]
    tracker_id: np.ndarray  # int64 [N]
    position: SourcePosition

    @property
    def num_detections(self) -> int:
        return len(self.xyxy)


@dataclass(frozen=True)
class FrameFailure:
    """A frame that could not be tracked (e.g. its image does not decode), with the reason."""

    stream_id: str
    frame_index: int
    position: SourcePosition
    reason: str


@dataclass(eq=False)
class ShardOutput:
    """What a tracker shard returns for one call, in request order."""

    results: list[FrameResult] = field(default_factory=list)
    failures: list[FrameFailure] = field(default_factory=list)
    track_seconds: float = 0.0
    embed_seconds: float = 0.0  # embedder time of the results this call consumed
    num_crops: int = 0
