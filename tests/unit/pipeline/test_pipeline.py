"""Driver-agnostic pipeline pieces without Ray: sharding, registry, shard, embedder, placement."""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from ray_deepsort.core import DEFAULT_APPEARANCE_THRESHOLD, DeepSORTTracker, Detections, is_default
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
from ray_deepsort.pipeline.actors import PlacementError, embedder_choice, plan_actors
from ray_deepsort.pipeline.embedder import (
    DEFAULT_CPU_FORWARD_BATCH,
    ModelChoice,
    forward_batch_size,
    load_reid_model,
    recommended_gate,
    resolve_gate,
    tracker_params_with_gate,
)
from ray_deepsort.pipeline.tracker_shard import CheckpointRestoreError, checkpoint_restore_error
from ray_deepsort.pipeline.types import EmbedBatchResult, EmbedOutcome
from ray_deepsort.reid.known_models import KNOWN_MODELS
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


def test_frame_embedder_takes_decoded_pixels_as_they_are() -> None:
    """The archive sends decoded frames ("raw"): the same embeddings as the encoded image, no
    encode/decode round trip; an array that is not BGR uint8 is a bad image."""
    frame = np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 20, 20], [30, 10, 70, 50]], np.float32)
    embedder = FrameEmbedder(MeanColourModel())
    raw, encoded, grey, floats = embedder.embed(
        [
            EmbedItem(frame, "raw", boxes, 80, 60),
            EmbedItem(_jpeg(frame), "png", boxes, 80, 60),
            EmbedItem(frame[..., 0], "raw", boxes, 80, 60),
            EmbedItem(frame.astype(np.float32), "raw", boxes, 80, 60),
        ]
    ).outcomes
    np.testing.assert_array_equal(raw.embeddings, encoded.embeddings)  # PNG is lossless
    assert grey.error is not None and grey.error.startswith("bad_image")
    assert floats.error is not None and floats.error.startswith("bad_image")


@pytest.mark.slow
def test_frame_embedder_with_reid_model_matches_tracker_embedding() -> None:
    model = load_reid_model(ModelChoice(device="cpu", input_size=(64, 32)))
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


def _nan_checkpoint(root: Path, scene: SyntheticScene) -> str:
    """A stream file for "cam" (frames[0], frames 0-9) that reads but holds NaN in a track's
    filter; returns its path."""
    from ray_deepsort.pipeline.state_store import CheckpointStore, StreamCheckpoint

    shard = TrackerShard(PARAMS, 0, 1, checkpoint_root=str(root))
    for i in range(10):
        shard.process([_request("cam", i, scene.detections(i))])
    state = dict(shard.state_dict()["cam"])
    assert len(state["mean"]) > 0
    state["mean"] = state["mean"].copy()
    state["mean"][0, 0] = np.nan
    store = CheckpointStore(str(root))
    store.write_stream(StreamCheckpoint("cam", "frames", 0, 9, state))
    return store.stream_path("frames", 0, "cam")


def test_shard_never_tracks_on_a_checkpoint_that_fails_validation(tmp_path) -> None:
    """Policy "fail" (the default): a stream file that reads but holds an invalid state stops
    the call with `CheckpointRestoreError` naming file, stream, partition, problem and the way
    out; nothing of the request is tracked."""
    scene = _scene(4, frames=12)
    path = _nan_checkpoint(tmp_path, scene)
    restored = TrackerShard(PARAMS, 0, 1, checkpoint_root=str(tmp_path))
    assert restored.on_invalid == "fail"
    with pytest.raises(CheckpointRestoreError) as caught:
        restored.process([_request("cam", 10, scene.detections(10), restore=True)])
    message = str(caught.value)
    for part in (path, "'cam'", "frames[0]", "mean", "backup", 'checkpoint.on_invalid="fresh"'):
        assert part in message, part
    assert "cam" not in restored.registry and restored.frames_tracked == 0
    # The same state again (a rerun) fails the same way: nothing to retry.
    with pytest.raises(CheckpointRestoreError):
        restored.process([_request("cam", 10, scene.detections(10), restore=True)])
    # Missing files are refused the same way.
    with pytest.raises(CheckpointRestoreError, match="missing"):
        restored.process([_request("other", 0, scene.detections(0), restore=True)])


def test_shard_on_invalid_fresh_starts_the_stream_over(tmp_path, caplog) -> None:
    """Policy "fresh" (an operator's choice): an ERROR naming stream, file and problem, then a
    fresh tracker."""
    scene = _scene(4, frames=12)
    path = _nan_checkpoint(tmp_path, scene)
    restored = TrackerShard(PARAMS, 0, 1, checkpoint_root=str(tmp_path), on_invalid="fresh")
    with caplog.at_level(logging.ERROR):
        output = restored.process([_request("cam", 10, scene.detections(10), restore=True)])
    assert "stream 'cam' (frames[0]) starts with a fresh tracker" in caplog.text
    assert path in caplog.text and "mean" in caplog.text
    assert len(output.results) == 1 and (output.results[0].tracker_id == -1).all()
    assert restored.registry.tracker("cam").frame_count == 1  # fresh, not the NaN state
    with pytest.raises(ValueError, match="on_invalid"):
        TrackerShard(PARAMS, 0, 1, on_invalid="ignore")


def test_checkpoint_restore_error_is_found_inside_ray_task_errors() -> None:
    """What the driver sees of a shard's `CheckpointRestoreError` is Ray's `RayTaskError`."""
    from ray.exceptions import RayTaskError

    cause = CheckpointRestoreError("bad file")
    wrapped = RayTaskError("TrackerShardActor.process", "traceback", cause).as_instanceof_cause()
    assert checkpoint_restore_error(wrapped) is not None
    assert "bad file" in str(checkpoint_restore_error(wrapped))
    chained = RuntimeError("listener")
    chained.__cause__ = wrapped
    assert checkpoint_restore_error(chained) is not None
    assert checkpoint_restore_error(RuntimeError("other")) is None


def test_shard_restore_of_a_missing_checkpoint_starts_fresh(tmp_path) -> None:
    shard = TrackerShard(PARAMS, 0, 1, checkpoint_root=str(tmp_path), on_invalid="fresh")
    det = _scene(5).detections(0)
    output = shard.process([_request("lost", 0, det, restore=True)])
    assert len(output.results) == 1 and "lost" in shard.registry
    with pytest.raises(RuntimeError, match="checkpoint storage"):
        TrackerShard(PARAMS, 0, 1).process([_request("x", 0, det, restore=True)])


# ---------------------------------------------------------------------------- model choice
OMZ = Path(__file__).resolve().parents[3] / ".." / "shared" / "models" / "intel-omz"
O288 = "person-reidentification-retail-0288"
XML_0288 = OMZ / O288 / "FP16" / f"{O288}.xml"
ONNX_0267 = OMZ / "person-reidentification-retail-0267" / "person-reidentification-retail-0267.onnx"
GATE_0288 = KNOWN_MODELS[O288].spec.appearance_threshold
GATE_0267 = KNOWN_MODELS["person-reidentification-retail-0267"].spec.appearance_threshold
needs_omz = pytest.mark.skipif(not XML_0288.is_file(), reason="needs ../shared/models/intel-omz")


def test_model_choice_is_plain_data_and_checks_its_values() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ray_deepsort.pipeline.embedder import ModelChoice, recommended_gate\n"
        "recommended_gate(ModelChoice(name='person-reidentification-retail-0288'))\n"
        "print(sorted(m for m in ('torch', 'timm', 'ray', 'openvino') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert output.stdout.strip() == "[]", output.stderr
    assert ModelChoice(input_size=[64, 32]).input_size == (64, 32)
    for bad, message in [
        ({"backend": "tensorrt"}, "backend"),
        ({"precision": "int8"}, "precision"),
        ({"threads": -1}, "threads"),
        ({"name": "", "path": ""}, "name"),
        ({"input_size": (0, 32)}, "input_size"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelChoice(**bad)
    assert not ModelChoice(name="none").enabled and ModelChoice().enabled
    assert ModelChoice(name="mobilenetv2_100").describe() == "mobilenetv2-imagenet"
    assert ModelChoice(name="", path="/m/x.onnx").describe() == "x.onnx"
    assert ModelChoice(name="osnet_x1_0", path="/m/w.pt").describe() == "osnet_x1_0 from w.pt"


def test_recommended_gate_by_name() -> None:
    assert GATE_0288 is not None and GATE_0267 is not None
    assert recommended_gate(ModelChoice(name=O288)) == GATE_0288
    assert recommended_gate(ModelChoice(name="person-reidentification-retail-0267")) == GATE_0267
    mobilenet_gate = KNOWN_MODELS["mobilenetv2-imagenet"].spec.appearance_threshold
    for name in ("mobilenetv2-imagenet", "mobilenetv2_100"):
        assert recommended_gate(ModelChoice(name=name)) == mobilenet_gate, name
    for name in ("resnet50", "none", "NONE"):
        assert recommended_gate(ModelChoice(name=name)) is None, name


@needs_omz
def test_recommended_gate_by_checksum(tmp_path: Path) -> None:
    assert recommended_gate(ModelChoice(name="", path=str(XML_0288))) == GATE_0288
    assert recommended_gate(ModelChoice(name="", path=str(ONNX_0267))) == GATE_0267
    folder = ModelChoice(name=O288, path=str(XML_0288.parent))
    assert recommended_gate(folder) == GATE_0288
    unknown = tmp_path / "mine.onnx"
    unknown.write_bytes(b"not a known model")
    assert recommended_gate(ModelChoice(name="", path=str(unknown))) is None
    assert recommended_gate(ModelChoice(name="", path=str(tmp_path / "missing.xml"))) is None
    with pytest.raises(ValueError, match="set the name to 'person-reidentification-retail-0288'"):
        recommended_gate(ModelChoice(path=str(XML_0288)))  # name left at mobilenetv2-imagenet


@needs_omz
def test_resolve_gate_as_the_jobs_do(caplog: pytest.LogCaptureFixture) -> None:
    omz = ModelChoice(name="", path=str(XML_0288))
    gate = resolve_gate(DEFAULT_APPEARANCE_THRESHOLD, omz)
    assert (gate.value, gate.source) == (GATE_0288, "model") and type(gate.value) is float
    weight = KNOWN_MODELS[O288].spec.appearance_weight
    assert weight is not None and gate.weight == weight
    settings = f"appearance gate {GATE_0288:.2f}, weight {weight:.2f}"
    assert gate.describe() == f"{settings} from {O288}"
    named = resolve_gate(DEFAULT_APPEARANCE_THRESHOLD, ModelChoice(name=O288))
    assert named.describe() == f"{settings} from {O288}"
    explicit = resolve_gate(0.7, omz, 0.5)  # written by the user: stays
    assert (explicit.value, explicit.source, explicit.weight) == (0.7, "explicit", 0.5)
    mobilenet = resolve_gate(DEFAULT_APPEARANCE_THRESHOLD, ModelChoice())
    mobilenet_spec = KNOWN_MODELS["mobilenetv2-imagenet"].spec
    assert (mobilenet.value, mobilenet.source) == (mobilenet_spec.appearance_threshold, "model")
    assert mobilenet.weight == 0.5  # it recommends no weight
    timm = resolve_gate(DEFAULT_APPEARANCE_THRESHOLD, ModelChoice(name="resnet50"))
    assert (timm.value, timm.source) == (0.7, "default")
    assert "resnet50 recommends none" in timm.describe()
    assert resolve_gate(DEFAULT_APPEARANCE_THRESHOLD, None).value == 0.7
    params, gate = tracker_params_with_gate(
        {"appearance_threshold": DEFAULT_APPEARANCE_THRESHOLD}, omz
    )
    assert params["appearance_threshold"] == GATE_0288 and not is_default(
        params["appearance_threshold"]
    )
    with caplog.at_level(logging.WARNING):
        gone = resolve_gate(DEFAULT_APPEARANCE_THRESHOLD, ModelChoice(name="", path="/no/m.xml"))
    assert gone.value == 0.7 and "not readable here" in caplog.text


def test_embedder_actors_get_their_cpus_as_threads() -> None:
    cpu = plan_actors({"CPU": 8.0}, reid_enabled=True, num_shards=1, embedder_num_cpus=2.5)
    choice = embedder_choice(ModelChoice(), cpu)
    assert (choice.threads, choice.device) == (2, "cpu")
    small = plan_actors({"CPU": 8.0}, reid_enabled=True, num_shards=1, embedder_num_cpus=0.5)
    assert embedder_choice(ModelChoice(), small).threads == 1
    assert embedder_choice(ModelChoice(threads=3, device="cuda"), small) == ModelChoice(
        threads=3, device="cuda"
    )
    gpu = plan_actors({"CPU": 8.0, "GPU": 1.0}, reid_enabled=True, num_shards=1)
    assert embedder_choice(ModelChoice(), gpu).device == "auto"


class _Recorder:
    """Stands in for a ReIDModel constructor: records its call."""

    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls.append((self.name, args, kwargs))
        return self.name


def test_load_reid_model_branches(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray_deepsort.reid import ReIDModel

    calls: list = []
    for name in ("from_pretrained", "from_file", "mobilenetv2_imagenet", "from_timm"):
        monkeypatch.setattr(ReIDModel, name, _Recorder(calls, name))
    common = {"device": "cpu", "max_batch_size": 128, "precision": "auto"}
    cases = [
        (ModelChoice(name=O288, path="/m/0288"), "from_pretrained", (O288,), {"path": "/m/0288"}),
        (ModelChoice(name="", path="/m/x.onnx"), "from_file", ("/m/x.onnx",), {}),
        (ModelChoice(name="osnet_x1_0", path="/m/w.pt"), "from_file", ("/m/w.pt",), {}),
        (ModelChoice(name=O288, backend="openvino"), "from_pretrained", (O288,), {}),
        (ModelChoice(), "mobilenetv2_imagenet", (), {}),
        (ModelChoice(name="mobilenetv2_100", threads=2), "mobilenetv2_imagenet", (), {}),
        (ModelChoice(name="resnet50", pretrained=False), "from_timm", ("resnet50",), {}),
    ]
    for choice, expected, args, extra in cases:
        calls.clear()
        assert load_reid_model(replace(choice, device="cpu", input_size=(64, 32))) == expected
        ((name, got_args, kwargs),) = calls
        assert got_args == args, choice
        assert {k: kwargs[k] for k in common} == common
        assert kwargs["threads"] == (choice.threads or None)
        assert kwargs["input_size"] == (64, 32)
        for key, value in extra.items():
            assert kwargs[key] == value
    calls.clear()
    load_reid_model(ModelChoice(name="osnet_x1_0", path="/m/w.pt"))
    assert calls[0][2]["architecture"] == "osnet_x1_0" and calls[0][2]["backend"] is None
    calls.clear()
    load_reid_model(ModelChoice(name="resnet50", pretrained=False, backend="openvino"))
    assert calls[0][2]["pretrained"] is False and calls[0][2]["backend"] == "openvino"
    assert "input_size" not in calls[0][2]  # None: the model's own
    calls.clear()
    load_reid_model(ModelChoice())
    assert calls[0][2]["backend"] == "torch"
    with pytest.raises(ValueError, match="none"):
        load_reid_model(ModelChoice(name="none"))


@needs_omz
def test_load_reid_model_known_ir_from_path_file_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray_deepsort.reid.download import CACHE_ENV

    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 110], [80, 20, 130, 115]], np.float32)
    reference = load_reid_model(ModelChoice(name="", path=str(XML_0288), device="cpu", threads=1))
    assert reference.spec.name == O288 and reference.backend.name == "openvino"
    expected = reference.embed(frame, boxes)
    # The cache, as `from_pretrained(name)` fills it (linked here: nothing is downloaded).
    cached = tmp_path / "models" / O288 / "FP16"
    cached.mkdir(parents=True)
    for suffix in (".xml", ".bin"):
        (cached / f"{O288}{suffix}").symlink_to(XML_0288.with_suffix(suffix).resolve())
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    for choice in (
        ModelChoice(name=O288, path=str(XML_0288.parent), device="cpu", threads=1),
        ModelChoice(name=O288, device="cpu", threads=1, backend="openvino"),
    ):
        model = load_reid_model(choice)
        assert model.spec.appearance_threshold == GATE_0288
        np.testing.assert_allclose(model.embed(frame, boxes), expected, atol=1e-5)


def test_shard_forgets_the_streams_of_partitions_taken_over_elsewhere() -> None:
    """An ingest worker that died could not drop its streams: the next owner of a partition
    drops whatever the shard still holds of it, and only of it."""
    shard = TrackerShard(PARAMS, 0, 1)
    det = _scene().detections(0)
    for stream, partition in (("a", 0), ("b", 0), ("c", 1)):
        request = dataclasses.replace(
            _request(stream, 0, det), position=SourcePosition("frames", partition, 0)
        )
        shard.process([request])
    assert shard.drop_partitions([("frames", 0), ("other", 1)]) == 2
    assert "c" in shard.registry and "a" not in shard.registry and "b" not in shard.registry
    assert shard.drop_partitions([("frames", 0)]) == 0
    # Taken over from the start again: frame 0 is new, not out of order.
    assert shard.process([_request("a", 0, det)]).failures == []


def test_plan_actors_counts_ingest_workers() -> None:
    plan = plan_actors(
        {"CPU": 4.0}, reid_enabled=True, num_shards=2, ingest_workers=2, ingest_num_cpus=1.0
    )
    assert plan.describe().endswith("2 ingest worker(s) x 1 CPU")
    with pytest.raises(PlacementError, match=r"need 5 CPUs.*ingest_num_cpus"):
        plan_actors(
            {"CPU": 4.0}, reid_enabled=True, num_shards=2, ingest_workers=3, ingest_num_cpus=1.0
        )


def test_a_previous_owners_late_drop_leaves_the_new_owners_state() -> None:
    """Ingest workers share shards: worker A's drop of a partition it lost can arrive after
    worker B took the stream over; only A's own streams go."""
    shard = TrackerShard(PARAMS, 0, 1)
    det = _scene().detections(0)
    shard.process([dataclasses.replace(_request("a", 0, det), owner="A")])
    shard.process([dataclasses.replace(_request("b", 0, det), owner="A")])
    shard.process([dataclasses.replace(_request("a", 1, det), owner="B")])  # B took "a" over
    assert shard.drop_streams(["a", "b"], owner="A") == 1
    assert "a" in shard.registry and "b" not in shard.registry
    assert shard.drop_streams(["a"]) == 1  # without an owner: whoever sent it
