"""The fleet benchmark's pure helpers: arguments, pre-encoded messages, checks, ratios, table."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from ray_deepsort.stream.wire import decode_frame

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def fleet() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("fleet")


def test_defaults_sweep_and_jpeg_fleet_sizes(fleet: ModuleType) -> None:
    args = fleet.parse_args([])
    assert args.stream_counts == [10, 100, 1000, 5000]
    assert args.worker_counts == [1, 2, 4]
    assert (args.fps, args.frames, args.objects, args.partitions) == (10.0, 30, 4, 12)
    jpeg = fleet.parse_args(["--jpeg", "--seconds", "2", "--fps", "5"])
    assert jpeg.stream_counts == [10, 100] and jpeg.frames == 10
    smoke = fleet.parse_args(["--streams", "10", "--workers", "2,1,2"])
    assert smoke.stream_counts == [10] and smoke.worker_counts == [1, 2]
    assert fleet.parse_size("64x32") == (64, 32)
    with pytest.raises(SystemExit):
        fleet.parse_args(["--workers", "0"])


def test_messages_decode_with_the_timestamp_stamped_at_send_time(fleet: ModuleType) -> None:
    workload = fleet.Workload(
        streams=5,
        frames=4,
        objects=3,
        embedding_dim=8,
        width=320,
        height=180,
        jpeg=False,
        partitions=2,
        seed=1,
    )
    groups = fleet.build_messages(workload, [1, 3])
    assert len(groups) == 4 and len(groups[0]) == fleet.SLOTS_PER_FRAME
    sent = [m for frame in groups for slot in frame for m in slot]
    assert len(sent) == 2 * 4
    # Each frame period sends camera 1 before camera 3 (its sub-slot comes first).
    assert [key for _, key, _, _ in sent[:2]] == [b"cam00001", b"cam00003"]
    boxes = fleet.box_tracks(5, 4, 3, 320, 180, seed=1)
    vectors = fleet.unit_embeddings(5, 3, 8, fleet.EMBEDDING_VARIANTS, seed=1)
    for index, (partition, key, pre, post) in enumerate(sent):
        camera, frame_index = (1, 3)[index % 2], index // 2
        frame = decode_frame(fleet.stamp(pre, post, 1_765_000_000.123456), key)
        assert partition == camera % 2 and frame.stream_id == f"cam{camera:05d}"
        assert frame.frame_index == frame_index
        assert frame.timestamp == pytest.approx(1_765_000_000.123456, abs=1e-6)
        np.testing.assert_array_equal(frame.xyxy, boxes[camera, frame_index])
        np.testing.assert_array_equal(
            frame.embeddings, vectors[camera, frame_index % fleet.EMBEDDING_VARIANTS]
        )
        assert (frame.width, frame.height, frame.image) == (320, 180, None)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, rtol=1e-5)


def test_jpeg_messages_carry_a_picture_and_no_embeddings(fleet: ModuleType) -> None:
    workload = fleet.Workload(
        streams=2,
        frames=2,
        objects=2,
        embedding_dim=8,
        width=64,
        height=48,
        jpeg=True,
        partitions=4,
        seed=0,
    )
    partition, key, pre, post = fleet.build_messages(workload, [0])[1][0][0]
    frame = decode_frame(fleet.stamp(pre, post, 1_765_000_000.0), key)
    assert (frame.image_format, frame.width, frame.height) == ("jpeg", 64, 48)
    assert frame.embeddings is None and frame.frame_index == 1 and partition == 0


def test_boxes_stay_inside_the_picture_and_move_smoothly(fleet: ModuleType) -> None:
    boxes = fleet.box_tracks(50, 40, 4, 320, 180, seed=3)
    assert boxes.shape == (50, 40, 4, 4) and boxes.dtype == np.int32
    assert (boxes[..., 2] > boxes[..., 0]).all() and (boxes[..., 3] > boxes[..., 1]).all()
    assert boxes[..., [0, 1]].min() >= 0
    assert boxes[..., 2].max() <= 320 and boxes[..., 3].max() <= 180
    # At most 3 % of the span per frame (plus rounding): continuous tracks, no jumps.
    assert np.abs(np.diff(boxes[..., 0], axis=1)).max() <= 0.03 * 320 + 1


def test_camera_slots_spread_the_fleet_over_a_frame_period(fleet: ModuleType) -> None:
    slots = [fleet.camera_slot(c, 1000) for c in range(1000)]
    assert np.bincount(slots).tolist() == [100] * fleet.SLOTS_PER_FRAME
    assert [fleet.camera_slot(c, 3) for c in range(3)] == [0, 3, 6]


def test_exactly_once_counts_missing_duplicate_and_unknown_rows(fleet: ModuleType) -> None:
    camera = np.array([0, 0, 1, 1, 1, -1, 0])
    frame = np.array([0, 1, 0, 1, 1, 0, 5])
    assert fleet.check_exactly_once(camera, frame, streams=2, frames=2) == {
        "rows": 7,
        "missing": 0,
        "duplicates": 1,
        "unexpected": 2,
    }
    assert fleet.check_exactly_once(np.array([1]), np.array([0]), 2, 2)["missing"] == 3


def test_group_settles_when_every_worker_holds_partitions(fleet: ModuleType) -> None:
    assert fleet.group_settled([6, 6], 12)
    assert not fleet.group_settled([12, 0], 12)  # the second worker is still joining
    assert not fleet.group_settled([6, -1], 12)
    assert fleet.group_settled([1, 1, 0], 2)  # more workers than partitions


def _row(streams: int, workers: int, cpu: float, fps: float) -> dict[str, object]:
    return {
        "mode": "embeddings",
        "streams": streams,
        "workers": workers,
        "ingest_cpu_us_per_frame_window": cpu,
        "ingest_cpu_us_per_frame": 2 * cpu,
        "frames_per_second": fps,
        "status": "OK",
        "rss_end": {"TrackerShardActor": {"count": 2, "total_mb": 400.0, "max_mb": 210.0}},
    }


def test_ratios_acceptance_and_table(fleet: ModuleType) -> None:
    rows = [_row(10, 1, 200, 100), _row(1000, 1, 260, 9000), _row(10, 2, 300, 100)]
    rows.append(_row(1000, 2, 480, 10_000))
    fleet.add_ratios(rows)
    assert [r["cpu_ratio_vs_smallest"] for r in rows] == [1.0, 1.3, 1.0, 1.6]
    assert [r["fps_ratio_vs_fewest_workers"] for r in rows] == [1.0, 1.0, 1.0, 1.11]
    lines = fleet.acceptance_lines(rows)
    assert len(lines) == 2 and lines[0].endswith("1.30x the 10-stream figure (limit 1.5x): OK")
    assert lines[1].endswith(": OVER")
    table = fleet.format_table(rows).splitlines()
    assert len(table) == 5 and "cpu us/f" in table[0] and "check" in table[0]
    assert len({len(line) for line in table}) == 1  # aligned columns
    assert table[1].split()[:3] == ["embeddings", "10", "1"]
    values = fleet.table_values(rows[0])
    assert values["shard_rss_mb"] == 200.0 and math.isnan(values["embedder_rss_mb"])


def test_latency_percentiles_in_milliseconds(fleet: ModuleType) -> None:
    from ray_deepsort.stream.latency import count_latencies

    histogram: dict[str, int] = {}
    count_latencies(histogram, np.array([0.010] * 98 + [0.5, 0.5]))
    p50, p99 = fleet.latency_ms(histogram)
    assert 10 <= p50 <= 11.3 and 500 <= p99 <= 562
    assert all(math.isnan(v) for v in fleet.latency_ms({}))
