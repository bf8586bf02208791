"""Driver-agnostic pieces of the distributed tracker, shared by the stream job and archive driver.

Plain, unit-testable classes (`FrameEmbedder`, `TrackerShard`, `TrackerRegistry`,
`ParquetResultWriter`) plus thin Ray actor shells in `ray_deepsort.pipeline.actors`. Nothing here
knows about Kafka; Ray is imported only by `actors`.
"""

from ray_deepsort.pipeline.embedder import (
    FrameEmbedder,
    ModelChoice,
    load_reid_model,
    recommended_gate,
    resolve_gate,
)
from ray_deepsort.pipeline.parquet import (
    FRAMES_SCHEMA,
    TRACKS_SCHEMA,
    ParquetResultWriter,
    batch_file_stem,
    parse_batch_file_stem,
)
from ray_deepsort.pipeline.registry import OutOfOrderFrameError, TrackerRegistry
from ray_deepsort.pipeline.sharding import shard_of
from ray_deepsort.pipeline.tracker_shard import TrackerShard
from ray_deepsort.pipeline.types import (
    EmbedItem,
    EmbedOutcome,
    FrameFailure,
    FrameResult,
    ShardOutput,
    SourcePosition,
    TrackRequest,
)

__all__ = [
    "FRAMES_SCHEMA",
    "TRACKS_SCHEMA",
    "EmbedItem",
    "EmbedOutcome",
    "FrameEmbedder",
    "FrameFailure",
    "FrameResult",
    "ModelChoice",
    "OutOfOrderFrameError",
    "ParquetResultWriter",
    "ShardOutput",
    "SourcePosition",
    "TrackRequest",
    "TrackerRegistry",
    "TrackerShard",
    "batch_file_stem",
    "load_reid_model",
    "parse_batch_file_stem",
    "recommended_gate",
    "resolve_gate",
    "shard_of",
]
