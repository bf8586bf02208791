"""Driver-agnostic pipeline pieces without Ray: sharding, registry, shard, embedder, placement."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

from ray_deepsort.core import DeepSORTTracker, Detections
from ray_deepsort.pipeline import (
    EmbedItem,
    FrameEmbedder,
    OutOfOrderFrameError,
    SourcePosition,
    TrackerRegistry,
    TrackerShard,
    TrackRequest,
    shard_of,
)
from ray_deepsort.pipeline.actors import PlacementError, plan_actors
from ray_deepsort.pipeline.embedder import DEFAULT_CPU_FORWARD_BATCH, forward_batch_size
from ray_deepsort.pipeline.types import EmbedBatchResult, EmbedOutcome
from ray_deepsort.synthetic import SceneConfig, SyntheticScene

PARAMS = {"minimum_consecutive_frames": 2}


# ---------------------------------------------------------------------------- sharding
def test_shard_of_is_crc32_and_stable() -> None:
    # CRC-32 (IEEE) of the UTF-8 id: the standard check value, as Java's CRC32 and Go's
    # crc32.ChecksumIEEE compute it; pinned shard numbers catch any change of the mapping.
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert shard_of("123456789", 1000) == 0xCBF43926 % 1000 == 262
    assert [shard_of(f"cam{k}", 3) for k in range(6)] == [1, 1, 1, 0, 0, 2]
    assert [shard_of(f"cam{k}", 4) for k in range(6)] == [0, 2, 0, 2, 1, 3]
    assert shard_of("kamera-ü", 7) == zlib.crc32("kamera-ü".encode()) % 7


def test_shard_of_spreads_streams() -> None:
    counts = np.bincount([shard_of(f"camera-{k}", 4) for k in range(400)], minlength=4)
    assert counts.min() > 70
    with pytest.raises(ValueError):
        shard_of("x", 0)


# ---------------------------------------------------------------------------- helpers
def _scene(seed: int = 0, frames: int = 40) -> SyntheticScene:
    return SyntheticScene(
        SceneConfig(seed=seed, num_objects=15, num_frames=frames, width=480, height=270)
    )


def _identity_vectors(det: Detections, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(100, dim))
    ids = np.where(det.data["gt_id"] >= 0, det.data["gt_id"], 99)
    return (table[ids] + rng.normal(0, 0.05, (len(ids), dim))).astype(np.float32)


def _request(
    stream: str, i: int, det: Detections, embeddings: np.ndarray | None = None, **kw: object
) -> TrackRequest:
    return TrackRequest(
        stream_id=stream,
        frame_index=i,
        timestamp=i / 30,
        xyxy=det.xyxy,
        confidence=det.confidence,
        class_id=det.class_id,
        position=SourcePosition("frames", 0, i),
        embeddings=embeddings,
        **kw,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------- registry, shard
def test_shard_matches_in_process_trackers_per_stream() -> None:
    scenes = {"a": _scene(1), "b": _scene(2), "c": _scene(3)}
    shards = [TrackerShard(PARAMS, k, 2) for k in range(2)]
    reference = {name: DeepSORTTracker(**PARAMS) for name in scenes}
    for i in range(40):
        requests: dict[int, list[TrackRequest]] = {0: [], 1: []}
        expected = {}
        for name, scene in scenes.items():
            det = scene.detections(i)
            vectors = _identity_vectors(det)
            requests[shard_of(name, 2)].append(_request(name, i, det, vectors))
            out = reference[name].update(det, embeddings=vectors, frame_index=i)
            expected[name] = out.tracker_id
        for k, shard in enumerate(shards):
            output = shard.process(requests[k])
            assert not output.failures
            for result in output.results:
                np.testing.assert_array_equal(result.tracker_id, expected[result.stream_id])
                assert result.position.offset == i
    assert sum(s.frames_tracked for s in shards) == 120
    assert max(int(t.next_track_id) for t in reference.values()) > 3


def test_shard_rejects_foreign_streams_and_reports_failures() -> None:
    shard = TrackerShard(PARAMS, 0, 2)
    foreign = next(f"s{k}" for k in range(10) if shard_of(f"s{k}", 2) == 1)
    own = next(f"s{k}" for k in range(10) if shard_of(f"s{k}", 2) == 0)
    det = _scene().detections(0)
    with pytest.raises(ValueError, match="belongs to shard 1"):
        shard.process([_request(foreign, 0, det)])
    failed = EmbedBatchResult([EmbedOutcome(None, "bad_image: nope")], 0, 0.0, 0.0)
    output = shard.process(
        [_request(own, 0, det, embed_slot=(0, 0)), _request(own, 1, det)], [failed]
    )
    assert [f.reason for f in output.failures] == ["bad_image: nope"]
    assert [r.frame_index for r in output.results] == [1]
    again = shard.process([_request(own, 1, det), _request(own, 3, det)])
    assert again.failures[0].reason.startswith("out_of_order:")
    assert [r.frame_index for r in again.results] == [3]


def test_shard_uses_embedder_results_by_slot() -> None:
    det = _scene().detections(0)
    vectors = _identity_vectors(det)
    shard = TrackerShard(PARAMS, 0, 1)
    result = EmbedBatchResult(
        [EmbedOutcome(np.zeros((1, 16), np.float32)), EmbedOutcome(vectors)], len(det), 0.1, 0.2
    )
    output = shard.process([_request("s", 0, det, embed_slot=(0, 1))], [result])
    assert output.num_crops == len(det) and output.embed_seconds == pytest.approx(0.3)
    reference = DeepSORTTracker(**PARAMS)
    reference.update(det, embeddings=vectors, frame_index=0)
    # Same state, gallery included, as a tracker fed the slot's embeddings directly.
    state, expected = shard.registry.tracker("s").state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(state[key], expected[key], err_msg=key)


def test_registry_frame_shape_ignores_boxes_outside_the_picture() -> None:
    registry = TrackerRegistry({"minimum_consecutive_frames": 1})
    det = Detections(
        xyxy=np.array([[10, 10, 40, 80], [500, 10, 540, 80]], np.float32),
        confidence=np.array([0.9, 0.9]),
    )
    ids = registry.update("s", 0, det, frame_shape=(240, 320))
    assert ids.tolist() == [1, -1]
    reference = DeepSORTTracker(minimum_consecutive_frames=1)
    frame = np.zeros((240, 320, 3), np.uint8)
    assert reference.update(det, frame=frame, frame_index=0).tracker_id.tolist() == [1, -1]


def test_registry_state_round_trip_and_order() -> None:
    scene = _scene(4)
    registry = TrackerRegistry(PARAMS)
    for i in range(20):
        registry.update("s", i, scene.detections(i))
    restored = TrackerRegistry(PARAMS)
    restored.load_state_dict(registry.state_dict())
    assert restored.last_frame_index("s") == 19
    for i in range(20, 40):
        det = scene.detections(i)
        np.testing.assert_array_equal(registry.update("s", i, det), restored.update("s", i, det))
    with pytest.raises(OutOfOrderFrameError):
        registry.update("s", 39, scene.detections(0))
    registry.drop({"s"})
    assert "s" not in registry and len(registry) == 0
    with pytest.raises(ValueError):
        TrackerRegistry({"minimum_iou_threshold": 2.0})


# ---------------------------------------------------------------------------- embedder
class MeanColourModel:
    """A tiny deterministic 'ReID model': mean BGR colour of each box, L2-normalised."""

    embedding_dim = 3

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed_batch(self, frames: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        self.calls.append(sum(len(b) for b in boxes))
        out = []
        for frame, xyxy in zip(frames, boxes, strict=True):
            rows = []
            for x1, y1, x2, y2 in np.asarray(xyxy, int):
                crop = frame[max(y1, 0) : y2, max(x1, 0) : x2].reshape(-1, 3).mean(axis=0) + 1
                rows.append(crop / np.linalg.norm(crop))
            out.append(np.asarray(rows, np.float32).reshape(-1, 3))
        return out


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_frame_embedder_batches_frames_and_reports_bad_images() -> None:
    red = np.zeros((60, 80, 3), np.uint8)
    red[..., 2] = 200
    blue = np.zeros((60, 80, 3), np.uint8)
    blue[..., 0] = 200
    boxes = np.array([[0, 0, 20, 20], [100, 10, 120, 30]], np.float32)  # 2nd outside the picture
    model = MeanColourModel()
    embedder = FrameEmbedder(model)
    result = embedder.embed(
        [
            EmbedItem(_jpeg(red), "png", boxes, 80, 60),
            EmbedItem(b"\x89PNG\r\n\x1a\n garbage", "png", boxes, 80, 60),
            EmbedItem(_jpeg(blue), "png", boxes[:1], 80, 60),
            EmbedItem(_jpeg(blue), "png", boxes[:1], 81, 60),
        ]
    )
    assert model.calls == [2]  # one forward for both good frames, the outside box skipped
    assert result.num_crops == 2
    first, broken, third, wrong_size = result.outcomes
    assert first.error is None and first.embeddings.shape == (2, 3)
    assert first.embeddings[0].argmax() == 2 and not first.embeddings[1].any()
    assert broken.embeddings is None and broken.error.startswith("bad_image")
    assert third.embeddings[0].argmax() == 0
    assert "header says 81x60" in wrong_size.error


@pytest.mark.slow
def test_frame_embedder_with_reid_model_matches_tracker_embedding() -> None:
    from ray_deepsort.pipeline.embedder import ModelSpec, load_reid_model

    model = load_reid_model(ModelSpec(device="cpu", input_size=(64, 32)))
    scene = _scene(5)
    frames = [scene.frame(i) for i in (0, 1)]
    dets = [scene.detections(i) for i in (0, 1)]
    items = [
        EmbedItem(_jpeg(f), "png", d.xyxy, 480, 270) for f, d in zip(frames, dets, strict=True)
    ]
    result = FrameEmbedder(model).embed(items)
    for frame, det, outcome in zip(frames, dets, result.outcomes, strict=True):
        np.testing.assert_allclose(outcome.embeddings, model.embed(frame, det.xyxy), atol=1e-5)


# ---------------------------------------------------------------------------- placement
def test_plan_actors_cpu_fallback_and_gpu() -> None:
    cpu = plan_actors({"CPU": 2.0}, reid_enabled=True, num_shards=2)
    assert (cpu.use_gpu, cpu.num_embedders, cpu.embedder_num_gpus) == (False, 1, 0.0)
    gpu = plan_actors({"CPU": 16.0, "GPU": 2.0}, reid_enabled=True, num_shards=4)
    assert (gpu.use_gpu, gpu.num_embedders, gpu.embedder_num_gpus) == (True, 2, 1.0)
    forced_cpu = plan_actors(
        {"CPU": 16.0, "GPU": 2.0}, reid_enabled=True, num_shards=1, use_gpu=False
    )
    assert not forced_cpu.use_gpu and forced_cpu.num_embedders == 1
    motion = plan_actors({"CPU": 1.0}, reid_enabled=False, num_shards=2)
    assert motion.num_embedders == 0 and "0 embedders" in motion.describe()


def test_plan_actors_refuses_what_cannot_be_scheduled() -> None:
    with pytest.raises(PlacementError, match="need 3 CPUs"):
        plan_actors({"CPU": 2.0}, reid_enabled=True, num_shards=4)
    with pytest.raises(PlacementError, match="no GPU"):
        plan_actors({"CPU": 8.0}, reid_enabled=True, num_shards=1, use_gpu=True)
    with pytest.raises(PlacementError, match="3 GPU embedders"):
        plan_actors({"CPU": 8.0, "GPU": 2.0}, reid_enabled=True, num_shards=1, num_embedders=3)


def test_plan_actors_without_tracker_shards() -> None:
    """The archive tracks inside its video workers: embedders only, no shard CPUs counted."""
    plan = plan_actors({"CPU": 1.0}, reid_enabled=True, num_shards=0, shard_num_cpus=4.0)
    assert (plan.num_embedders, plan.num_shards) == (1, 0)
    assert plan.describe() == "1 CPU embedder(s) x 1 CPU, no tracker shards"
    with pytest.raises(PlacementError, match="num_shards must be >= 0"):
        plan_actors({"CPU": 4.0}, reid_enabled=True, num_shards=-1)


def test_forward_batch_size_shared_default() -> None:
    assert forward_batch_size(0, on_gpu=False, request_crops=128) == DEFAULT_CPU_FORWARD_BATCH
    assert forward_batch_size(0, on_gpu=True, request_crops=128) == 128
    assert forward_batch_size(32, on_gpu=False, request_crops=128) == 32
    assert forward_batch_size(32, on_gpu=True, request_crops=128) == 32


def test_shard_writes_and_lazily_restores_checkpoints_skipping_included_frames(tmp_path) -> None:
    """A shard writes its streams' files; a fresh shard loads one when a request says `restore`,
    skips the replayed frames the state already holds, and then tracks exactly as before."""
    scene = _scene(4, frames=40)
    frames = [(scene.detections(i), _identity_vectors(scene.detections(i))) for i in range(40)]
    root = str(tmp_path)
    original = TrackerShard(PARAMS, 0, 1, checkpoint_root=root)
    for i in range(20):
        original.process([_request("cam", i, *frames[i])])
    written = original.write_checkpoints(original.state_dict(), {"cam": ("frames", 0, 19)})
    assert set(written) == {"cam"} and written["cam"].endswith(".npz")
    expected = [original.process([_request("cam", i, *frames[i])]) for i in range(20, 40)]

    restored = TrackerShard(PARAMS, 0, 1, checkpoint_root=root)
    replay = [_request("cam", i, *frames[i], restore=i == 15) for i in range(15, 40)]
    output = restored.process(replay)
    assert restored.frames_skipped == 5  # offsets 15..19 are in the checkpoint
    assert [r.frame_index for r in output.results] == list(range(20, 40))
    for got, want in zip(output.results, expected, strict=True):
        np.testing.assert_array_equal(got.tracker_id, want.results[0].tracker_id)


def test_shard_restore_of_a_missing_checkpoint_starts_fresh(tmp_path) -> None:
    shard = TrackerShard(PARAMS, 0, 1, checkpoint_root=str(tmp_path))
    det = _scene(5).detections(0)
    output = shard.process([_request("lost", 0, det, restore=True)])
    assert len(output.results) == 1 and "lost" in shard.registry
    with pytest.raises(RuntimeError, match="checkpoint storage"):
        TrackerShard(PARAMS, 0, 1).process([_request("x", 0, det, restore=True)])
