"""User detector plugins (`module:callable`) run in batched Ray actors.

Protocol (see docs/archive.md): the plugin is given a list of BGR uint8 frames (HxWx3, read-only:
copy before writing into one) and returns one detections object per frame, in order:
`ray_deepsort.Detections` or `supervision.Detections` (xyxy in pixels, confidence, class_id).
An optional per-box `data["stream"]` (str or int) splits a frame's boxes into streams (e.g. the
tiles of a mosaic recording), each tracked on its own.

`module:callable` names either a class, instantiated once per actor with the configured keyword
arguments and then called with each batch, or a function, called with each batch (and the
keyword arguments). Model weights therefore load once per actor, on its GPU when it has one.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ray_deepsort.core.detections import to_native
from ray_deepsort.io.detections import FrameDetections
from ray_deepsort.pipeline.actors import wait_until_started

STREAM_KEY = "stream"


class DetectorPluginError(RuntimeError):
    """The plugin cannot be loaded or broke its protocol (wrong count or type of results)."""


@dataclass
class DetectorSpec:
    """Which detector a `DetectorActor` builds; only names and plain values travel to the actor."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_batch_frames: int = 16
    max_wait_ms: float = 5.0


@dataclass(frozen=True, eq=False)
class DetectBatchResult:
    """Detections of the frames of one request, and the detector time spent on them."""

    frames: list[FrameDetections]
    seconds: float


def resolve_target(target: str) -> Any:
    """Import `module:attr` (attr may be dotted, e.g. `pkg.mod:Class.factory`)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise DetectorPluginError(f"detector must be given as module:callable, got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise DetectorPluginError(
            f"cannot import detector module {module_name!r}: {error}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise DetectorPluginError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise DetectorPluginError(f"{target} is not callable")
    return obj


def plugin_import_root(target: str) -> str | None:
    """The sys.path folder the driver imports `target`'s module from (None if not found here).

    Found without running the module (for a dotted name its parent packages are imported). The
    detector actors get this folder on their PYTHONPATH, so a plugin file next to the driver
    works without installing it (on a multi-node cluster the folder must be on shared storage,
    or ship the plugin with `ray job submit --working-dir` / an installed package).
    """
    module_name = target.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    depth = len(module_name.split("."))
    origin = Path(spec.origin).resolve()
    is_package = origin.name == "__init__.py"
    return str(origin.parents[depth if is_package else depth - 1])


def load_detector(spec: DetectorSpec) -> Callable[[list[np.ndarray]], Sequence[Any]]:
    """The batch function of `spec`: an instance for a class target, else the function itself."""
    obj = resolve_target(spec.target)
    kwargs = dict(spec.kwargs)
    if inspect.isclass(obj):
        instance = obj(**kwargs)
        if not callable(instance):
            raise DetectorPluginError(f"{spec.target}() returned a non-callable {type(instance)}")
        return instance
    if kwargs:
        return lambda frames: obj(frames, **kwargs)
    return obj


def frame_detections(detections: Any) -> FrameDetections:
    """Plain arrays of one plugin result (ours or supervision's), with its stream labels."""
    try:
        native = to_native(detections)
    except TypeError as error:
        raise DetectorPluginError(str(error)) from None
    data = getattr(detections, "data", None) or {}
    stream = None
    if STREAM_KEY in data:
        stream = np.asarray(data[STREAM_KEY]).astype(str).reshape(-1)
        if len(stream) != len(native):
            raise DetectorPluginError(
                f"data['stream'] has {len(stream)} entries for {len(native)} boxes"
            )
    return FrameDetections(
        xyxy=native.xyxy,
        confidence=native.confidence_or_ones().astype(np.float32),
        class_id=native.class_id_or_zeros().astype(np.int64),
        stream=stream,
    )


def run_detector(
    detector: Callable[[list[np.ndarray]], Sequence[Any]], frames: list[np.ndarray]
) -> list[FrameDetections]:
    """Call the plugin once on `frames` and check that it kept its side of the protocol."""
    output = detector(frames)
    results = list(output)
    if len(results) != len(frames):
        raise DetectorPluginError(
            f"detector returned {len(results)} results for a batch of {len(frames)} frames"
        )
    return [frame_detections(result) for result in results]


class DetectorActor:
    """Ray actor body: one plugin instance; concurrent requests of many videos share batches."""

    def __init__(self, spec: DetectorSpec) -> None:
        from ray_deepsort.pipeline.coalesce import Coalescer

        self.detector = load_detector(spec)
        self._coalescer: Coalescer[np.ndarray, DetectBatchResult] = Coalescer(
            self._detect_batch,
            _split_detect_result,
            size_of=lambda _: 1,
            max_batch_size=spec.max_batch_frames,
            max_wait_s=spec.max_wait_ms / 1000.0,
        )

    def ready(self) -> bool:
        return True

    def _detect_batch(self, frames: list[np.ndarray]) -> DetectBatchResult:
        started = time.perf_counter()
        detected = run_detector(self.detector, frames)
        return DetectBatchResult(detected, time.perf_counter() - started)

    async def detect(self, frames: list[np.ndarray]) -> DetectBatchResult:
        return await self._coalescer.submit(frames)


def _split_detect_result(
    result: DetectBatchResult, parts: list[list[np.ndarray]]
) -> list[DetectBatchResult]:
    total = max(sum(len(part) for part in parts), 1)
    split, start = [], 0
    for part in parts:
        split.append(
            DetectBatchResult(
                result.frames[start : start + len(part)], result.seconds * len(part) / total
            )
        )
        start += len(part)
    return split


def start_detectors(
    spec: DetectorSpec,
    count: int,
    *,
    num_cpus: float,
    num_gpus: float,
    start_timeout_s: float = 300.0,
    extra_options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Start `count` detector actors and wait until each has loaded its plugin."""
    import ray

    actor_cls = ray.remote(DetectorActor)
    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": 3,  # detection is idempotent: redo the calls a dead actor lost
        "max_task_retries": 3,
    }
    root = plugin_import_root(spec.target)
    if root is not None:
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
    options.update(extra_options or {})
    handles = [actor_cls.options(**options).remote(spec) for _ in range(count)]
    try:
        wait_until_started(
            {f"detector {k}": handle for k, handle in enumerate(handles)},
            start_timeout_s,
            f"{count} detector(s) x {num_cpus:g} CPU + {num_gpus:g} GPU",
        )
    except ray.exceptions.RayActorError as error:  # the plugin failed to load in the actor
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise DetectorPluginError(
            f"detector plugin {spec.target} did not load: {lines[-1] if lines else error}"
        ) from None
    return handles
