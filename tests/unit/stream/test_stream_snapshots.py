"""`CheckpointCoordinator` on its own, without Kafka or Ray: what a partition is restored from,
which streams a snapshot asks for and writes, when manifests are written, idle eviction."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from driver_fakes import P0, P1, FakePool

from ray_deepsort.pipeline.state_store import CheckpointStore, PartitionManifest, stream_file_name
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError
from ray_deepsort.stream.config import load_config
from ray_deepsort.stream.snapshots import CheckpointCoordinator, Restored
from ray_deepsort.stream.summary import JobSummary

# cam0..cam3 hash to shard 0 and cam4 to shard 1 (CRC-32 of the id, 2 shards).
STREAMS = [f"cam{k}" for k in range(5)]


def _coordinator(tmp_path: Path, *overrides: str) -> CheckpointCoordinator:
    """With FakePool's two shards; `get=list` resolves their (plain) answers."""
    config = load_config(None, [f'output.path="{tmp_path}"', "output.fsync=false", *overrides])
    return CheckpointCoordinator(config, FakePool(), JobSummary(), get=list)  # type: ignore[arg-type]


def _manifest(partition: int, offset: int, streams: list[str]) -> PartitionManifest:
    return PartitionManifest(
        "frames",
        partition,
        offset,
        {stream_id: stream_file_name(stream_id) for stream_id in streams},
    )


def _store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path, fsync=False)


def test_manifest_behind_the_commit_restores_its_streams_and_replays_up_to_the_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _store(tmp_path).write_manifest(_manifest(0, 7, ["cam0", "cam1"]))
    checkpoint = _coordinator(tmp_path)

    with caplog.at_level(logging.INFO, logger="ray_deepsort.stream"):
        restored = checkpoint.restore_partition(P0, 12)

    assert restored == Restored(streams=["cam0", "cam1"], replay_from=7)  # seek back to 7
    assert "restored 2 stream(s) from the checkpoint at offset 7 (committed 12)" in caplog.text
    assert checkpoint.replay_below == {P0: 12} and checkpoint.covered == {P0: 7}
    assert checkpoint.on_disk == {"cam0": P0, "cam1": P0}
    # Offsets 7..11 are tracked without output; the replay ends at the committed offset.
    assert [checkpoint.replay_limit(P0, offset) for offset in (7, 11, 12, 8)] == [
        12,
        12,
        None,
        None,
    ]
    assert not checkpoint.replay_below
    # The first frame of a restored stream tells its shard to load the file, later ones do not.
    assert checkpoint.take_restore("cam0") and not checkpoint.take_restore("cam0")


def test_manifest_at_the_commit_restores_without_replay(tmp_path: Path) -> None:
    _store(tmp_path).write_manifest(_manifest(1, 12, ["cam2"]))
    checkpoint = _coordinator(tmp_path)
    assert checkpoint.restore_partition(P1, 12) == Restored(streams=["cam2"], replay_from=None)
    assert not checkpoint.replay_below and checkpoint.on_disk == {"cam2": P1}


def test_commit_below_the_manifest_starts_fresh_trackers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A manifest ahead of the committed offset (the group's offsets were reset by hand) holds
    state of frames that will be tracked again: it is replaced by an empty one at the commit."""
    store = _store(tmp_path)
    store.write_manifest(_manifest(0, 30, ["cam0", "cam1"]))
    checkpoint = _coordinator(tmp_path)

    with caplog.at_level(logging.WARNING, logger="ray_deepsort.stream"):
        assert checkpoint.restore_partition(P0, 20) is None

    assert "checkpoint at offset 30 does not match committed offset 20" in caplog.text
    fresh = store.read_manifest("frames", 0)
    assert fresh is not None and (fresh.offset, fresh.streams) == (20, {})
    assert checkpoint.covered == {P0: 20} and not checkpoint.on_disk
    assert not checkpoint.replay_below and checkpoint.replay_limit(P0, 20) is None


def test_snapshots_ask_shards_only_for_streams_that_moved_since_their_file(
    tmp_path: Path,
) -> None:
    checkpoint = _coordinator(tmp_path)
    checkpoint.stream_position = {f"cam{k}": (P0, 10 + k) for k in range(5)}
    checkpoint.persisted = {"cam0": (P0, 10), "cam1": (P0, 7), "cam4": (P0, 14)}
    states = checkpoint.states_after_batch(batch_id=1)
    first, second = checkpoint.pool.shards
    assert first.state_dict.calls == [("a0", ["cam1", "cam2", "cam3"])]
    assert second.state_dict.calls == [("b0", [])]  # asked anyway: a dead shard must show
    assert states is not None
    assert states.moved == [{f"cam{k}": (P0, 10 + k) for k in (1, 2, 3)}, {}]


def test_snapshots_are_taken_every_n_batches(tmp_path: Path) -> None:
    checkpoint = _coordinator(tmp_path, "checkpoint.every_batches=2")
    assert checkpoint.states_after_batch(batch_id=1) is None
    assert checkpoint.states_after_batch(batch_id=2) is not None
    assert all(len(shard.state_dict.calls) == 1 for shard in checkpoint.pool.shards)


def test_a_commit_writes_the_moved_streams_then_the_manifest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    checkpoint = _coordinator(tmp_path)
    checkpoint.restore_partition(P0, 10)  # no checkpoint yet: empty manifest at 10
    for k, stream_id in enumerate(STREAMS):
        checkpoint.frame_submitted(P0, stream_id, 10 + k, time.monotonic())
    checkpoint.batch_finished({P0: 14}, {P0}, checkpoint.states_after_batch(batch_id=1))
    checkpoint.write_snapshot()

    first, second = checkpoint.pool.shards
    assert [sorted(due) for _, due in first.write_checkpoints.calls] == [STREAMS[:4]]
    assert second.write_checkpoints.calls == [(("b0", ["cam4"]), {"cam4": ("frames", 0, 14)})]
    manifest = store.read_manifest("frames", 0)
    assert manifest is not None and manifest.offset == 15 and sorted(manifest.streams) == STREAMS
    assert checkpoint.summary.checkpoints == 1

    # Only cam1 moves: only its file is written, and the manifest moves on with the offsets.
    checkpoint.frame_submitted(P0, "cam1", 15, time.monotonic())
    checkpoint.batch_finished({P0: 15}, {P0}, None)
    checkpoint.snapshot_now({P0})
    checkpoint.write_snapshot()
    assert first.write_checkpoints.calls[-1][1] == {"cam1": ("frames", 0, 15)}
    assert second.write_checkpoints.calls[-1][1] == {}
    manifest = store.read_manifest("frames", 0)
    assert manifest is not None and manifest.offset == 16 and len(manifest.streams) == 5

    # Nothing moved: the shards are asked (a dead one must show), no manifest is rewritten.
    checkpoint.snapshot_now({P0})
    checkpoint.write_snapshot()
    assert all(shard.write_checkpoints.calls[-1][1] == {} for shard in checkpoint.pool.shards)
    assert checkpoint.summary.checkpoints == 2


def test_a_revoked_partitions_snapshot_is_never_written(tmp_path: Path) -> None:
    checkpoint = _coordinator(tmp_path)
    checkpoint.restore_partition(P0, 0)
    checkpoint.frame_submitted(P0, "cam0", 0, time.monotonic())
    checkpoint.batch_finished({P0: 0}, {P0}, checkpoint.states_after_batch(batch_id=1))
    checkpoint.forget({P0}, {"cam0"})
    checkpoint.write_snapshot()
    assert not any(shard.write_checkpoints.calls for shard in checkpoint.pool.shards)
    assert not checkpoint.manifests and not checkpoint.stream_position
    assert not checkpoint.last_seen and checkpoint.summary.checkpoints == 0


def test_idle_streams_leave_memory_once_their_last_state_is_in_a_file(tmp_path: Path) -> None:
    checkpoint = _coordinator(tmp_path, "checkpoint.evict_idle_s=1")
    checkpoint.restore_partition(P0, 0)
    long_ago = time.monotonic() - 10
    for stream_id in ("cam0", "cam4"):
        checkpoint.frame_submitted(P0, stream_id, 0 if stream_id == "cam0" else 1, long_ago)
    checkpoint.batch_finished({P0: 1}, {P0}, None)
    first, second = checkpoint.pool.shards

    checkpoint.evict_idle({P0}, all_committed=False)  # their last frames are in no file yet
    assert not first.dropped and not second.dropped and not checkpoint.on_disk

    checkpoint.evict_check_at = 0.0  # the next check is due
    checkpoint.evict_idle({P0}, all_committed=True)  # written now, then dropped
    assert first.dropped == [["cam0"]] and second.dropped == [["cam4"]]
    assert checkpoint.on_disk == {"cam0": P0, "cam4": P0} and not checkpoint.last_seen
    assert checkpoint.summary.streams_evicted == 2
    manifest = _store(tmp_path).read_manifest("frames", 0)
    assert manifest is not None and manifest.offset == 2 and len(manifest.streams) == 2
    assert checkpoint.take_restore("cam4")  # its next frame loads the file back


def test_a_malformed_manifest_follows_checkpoint_on_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    store.write_manifest(_manifest(0, 7, ["cam0"]))
    path = Path(store.manifest_path("frames", 0))
    path.write_text('{"topic": "frames", "partition": 0')  # torn write
    with pytest.raises(CheckpointRestoreError, match=r"frames\[0\] cannot be read: .*not JSON"):
        _coordinator(tmp_path).restore_partition(P0, 12)  # on_invalid="fail", the default

    fresh = _coordinator(tmp_path, 'checkpoint.on_invalid="fresh"')
    with caplog.at_level(logging.ERROR, logger="ray_deepsort.stream"):
        assert fresh.restore_partition(P0, 12) is None  # its streams start fresh
    assert "start with fresh trackers" in caplog.text and str(path) in caplog.text
    assert not fresh.on_disk and not fresh.replay_below
    assert store.read_manifest("frames", 0) == PartitionManifest("frames", 0, 12, {})
