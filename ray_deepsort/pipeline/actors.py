"""Thin Ray actor shells around `FrameEmbedder` and `TrackerShard`, and where to place them.

Placement is decided from `ray.cluster_resources()` before any actor is created: an actor asking
for a GPU on a cluster without one would stay pending forever without an error, so embedders
get `num_gpus=1` only when the cluster has GPUs, and a plan that cannot fit fails fast with a
message that says what to change.

Failures: both kinds of actor restart when their process dies (`max_restarts=-1`). Embedding is
stateless, so embedder calls are retried on the restarted actor (`max_task_retries=-1`) and give
the same result. A tracker shard's state dies with it, so its calls are never retried: each
incarnation has a random token (`ready()` returns it) and refuses calls addressed to another
one with `ShardRestartedError`, so a restart can never silently track on with empty state; the
driver rebuilds the state and adopts the new token (`JobActors.await_shards`). An exception a
shard call raises itself (such as `CheckpointRestoreError`) neither restarts the actor nor is
retried (Ray retries application errors only with `retry_exceptions`): it reaches the driver.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ray_deepsort.pipeline.embedder import ModelChoice

# Ray actor options. Embedders are stateless: a restarted one redoes lost calls exactly.
EMBEDDER_RESTARTS: dict[str, int] = {"max_restarts": -1, "max_task_retries": -1}
# Tracker shards restart empty; their calls fail instead of running on the empty actor.
SHARD_RESTARTS: dict[str, int] = {"max_restarts": -1, "max_task_retries": 0}


logger = logging.getLogger("ray_deepsort.pipeline")


class PlacementError(RuntimeError):
    """The requested actors cannot be scheduled on this cluster (or did not start in time)."""


class ShardRestartedError(RuntimeError):
    """A call meant for one incarnation of a tracker shard reached a restarted (empty) one."""


@dataclass(frozen=True)
class ActorPlan:
    """How many actors of each kind, and the resources each one asks for."""

    use_gpu: bool
    num_embedders: int
    embedder_num_cpus: float
    embedder_num_gpus: float
    num_shards: int
    shard_num_cpus: float
    ingest_workers: int = 0  # the stream job's ingest worker actors (planned here, started there)
    ingest_num_cpus: float = 0.0

    def describe(self) -> str:
        if self.num_embedders:
            where = "GPU" if self.use_gpu else "CPU"
            gpu = f" + {self.embedder_num_gpus:g} GPU" if self.use_gpu else ""
            embedders = (
                f"{self.num_embedders} {where} embedder(s) x {self.embedder_num_cpus:g} CPU{gpu}"
            )
        else:
            embedders = "0 embedders (no ReID)"
        if not self.num_shards:
            return f"{embedders}, no tracker shards"
        described = f"{embedders}, {self.num_shards} tracker shard(s) x {self.shard_num_cpus:g} CPU"
        if self.ingest_workers:
            described += f", {self.ingest_workers} ingest worker(s) x {self.ingest_num_cpus:g} CPU"
        return described


def plan_actors(
    cluster_resources: Mapping[str, float],
    *,
    reid_enabled: bool,
    num_shards: int,
    num_embedders: int = 0,
    embedder_num_cpus: float = 1.0,
    shard_num_cpus: float = 0.5,
    use_gpu: str | bool = "auto",
    ingest_workers: int = 0,
    ingest_num_cpus: float = 0.0,
) -> ActorPlan:
    """Choose embedder placement from the cluster's resources and check that everything fits.

    `num_embedders=0` means one per GPU, or a single CPU embedder on a cluster without GPUs.
    `num_shards=0` plans no tracker shards (the archive tracks inside its video workers).
    `use_gpu`: "auto" (GPUs when the cluster has any), True (require them) or False (CPU only).
    `ingest_workers` x `ingest_num_cpus` count towards the CPUs needed (the stream job's).
    """
    if num_shards < 0:
        raise PlacementError(f"num_shards must be >= 0, got {num_shards}")
    gpus = float(cluster_resources.get("GPU", 0.0))
    cpus = float(cluster_resources.get("CPU", 0.0))
    gpu = gpus >= 1 if use_gpu == "auto" else bool(use_gpu)
    if gpu and gpus < 1:
        raise PlacementError("use_gpu is true but the cluster has no GPU")
    embedders = 0
    if reid_enabled:
        embedders = num_embedders or (math.floor(gpus) if gpu else 1)
        if gpu and embedders > math.floor(gpus):
            raise PlacementError(f"{embedders} GPU embedders requested, cluster has {gpus:g} GPUs")
    plan = ActorPlan(
        use_gpu=gpu and embedders > 0,
        num_embedders=embedders,
        embedder_num_cpus=embedder_num_cpus,
        embedder_num_gpus=1.0 if gpu and embedders > 0 else 0.0,
        num_shards=num_shards,
        shard_num_cpus=shard_num_cpus,
        ingest_workers=ingest_workers,
        ingest_num_cpus=ingest_num_cpus,
    )
    needed = (
        embedders * embedder_num_cpus
        + num_shards * shard_num_cpus
        + ingest_workers * ingest_num_cpus
    )
    if needed > cpus + 1e-9:
        raise PlacementError(
            f"{plan.describe()} need {needed:g} CPUs, the cluster has {cpus:g}: lower "
            "actors.num_shards / actors.shard_num_cpus / actors.embedder_num_cpus / "
            "actors.ingest_num_cpus or add nodes"
        )
    return plan


class EmbedderActor:
    """Ray actor body: loads the ReID model once, then embeds batches of frames.

    `metrics_tags` label its `deepsort_embed_batch_size` histogram: actor="embedder" plus these
    (`start_actors` adds index=k).
    """

    def __init__(self, choice: ModelChoice, metrics_tags: Mapping[str, str] | None = None) -> None:
        import ray
        import torch

        from ray_deepsort.pipeline.embedder import FrameEmbedder, load_reid_model

        gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
        warn_if_gpu_without_cuda(gpu_ids, torch.cuda.is_available(), choice.device)
        self.embedder = FrameEmbedder(load_reid_model(choice))
        self._histogram: Any = None
        tags = {"actor": "embedder", **{str(k): str(v) for k, v in (metrics_tags or {}).items()}}
        try:
            from ray.util.metrics import Histogram

            self._histogram = Histogram(
                "deepsort_embed_batch_size",
                description="Crops per embedder forward request",
                boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                tag_keys=tuple(sorted(tags)),
            )
            self._histogram.set_default_tags(tags)
        except Exception:  # metrics are optional (e.g. outside a Ray worker)
            self._histogram = None

    def ready(self) -> int:
        return int(self.embedder.model.embedding_dim)

    def embed(self, items: list[Any]) -> Any:
        result = self.embedder.embed(items)
        if self._histogram is not None:
            try:
                self._histogram.observe(result.num_crops)
            except Exception:  # never fail a batch over a metric
                self._histogram = None
        return result


class TrackerShardActor:
    """Ray actor body around `TrackerShard`; embedder results arrive as resolved arguments.

    Calls that read or change tracker state name the incarnation (`ready()`'s token) they are
    meant for; a restarted actor has another token and raises `ShardRestartedError`.
    """

    def __init__(
        self,
        tracker_params: Mapping[str, Any],
        shard_index: int,
        num_shards: int,
        checkpoint_root: str | None = None,
        fsync: bool = True,
        on_invalid: str = "fail",
    ) -> None:
        from ray_deepsort.pipeline.tracker_shard import TrackerShard

        self.shard = TrackerShard(
            tracker_params, shard_index, num_shards, checkpoint_root, fsync, on_invalid
        )
        self.incarnation = uuid.uuid4().hex  # new at every (re)start

    def ready(self) -> str:
        return self.incarnation

    def _check(self, incarnation: str) -> None:
        if incarnation != self.incarnation:
            raise ShardRestartedError(
                f"tracker shard {self.shard.shard_index} restarted and lost its streams' state"
            )

    def process(self, incarnation: str, requests: list[Any], *embed_results: Any) -> Any:
        self._check(incarnation)
        return self.shard.process(requests, embed_results)

    def drop_streams(self, stream_ids: list[str], owner: str | None = None) -> int:
        return self.shard.drop_streams(stream_ids, owner)

    def drop_partitions(self, partitions: list[tuple[str, int]]) -> int:
        return self.shard.drop_partitions(partitions)

    def state_dict(self, incarnation: str, stream_ids: list[str] | None = None) -> dict[str, Any]:
        self._check(incarnation)
        return self.shard.state_dict(stream_ids)

    def write_checkpoints(
        self, states: dict[str, Any], positions: dict[str, tuple[str, int, int]]
    ) -> dict[str, str]:
        """Write streams from a `state_dict` snapshot (an ObjectRef Ray resolves in this
        process); any incarnation may: the states are the argument, not this actor's."""
        return self.shard.write_checkpoints(states, positions)


@dataclass
class JobActors:
    """The started actors of one job run."""

    plan: ActorPlan
    embedders: list[Any]
    shards: list[Any]
    embedding_dim: int | None
    shard_incarnations: list[str] = field(default_factory=list)  # what calls to shard k name

    def kill(self) -> None:
        import ray

        for actor in [*self.embedders, *self.shards]:
            ray.kill(actor)

    def await_shards(self, timeout_s: float) -> None:
        """Wait until every shard answers (restarted ones included) and adopt their tokens.

        Call it only once the driver is about to rebuild the shards' state: calls naming the
        new tokens run on whatever state the shards have.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                tokens = ray.get(
                    [shard.ready.remote() for shard in self.shards],
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                break
            except (RayActorError, GetTimeoutError) as error:  # unavailable while restarting
                if time.monotonic() >= deadline:
                    raise PlacementError(
                        f"tracker shards did not come back within {timeout_s:g}s: {error}"
                    ) from error
                time.sleep(0.05)
        self.shard_incarnations = [str(token) for token in tokens]


def start_actors(
    plan: ActorPlan,
    model: ModelChoice,
    tracker_params: Mapping[str, Any] | None = None,
    start_timeout_s: float = 300.0,
    name_prefix: str | None = None,
    *,
    embedder_class: type[EmbedderActor] = EmbedderActor,
    embedder_kwargs: Mapping[str, Any] | None = None,
    embedder_options: Mapping[str, Any] | None = None,
    checkpoint_root: str | None = None,
    fsync: bool = True,
    on_invalid: str = "fail",
) -> JobActors:
    """Create the actors of `plan` and wait until every one has started (model loaded).

    `checkpoint_root` (the output path) lets tracker shards read and write their streams'
    checkpoints themselves; on a multi-node cluster it must be storage every node reaches
    (an object-store URI or a shared volume). `on_invalid` is the shards' policy for a stream
    checkpoint they cannot restore (`TrackerShard`: "fail" or "fresh").

    `embedder_class` (an `EmbedderActor` subclass such as `CoalescingEmbedderActor`) gets
    `(choice, metrics_tags=..., **embedder_kwargs)`; `embedder_options` are extra Ray actor
    options that override the defaults (`EMBEDDER_RESTARTS`, CPUs, GPUs). `model.threads` 0
    becomes the embedder's CPUs (at least 1): OpenVINO / ONNX Runtime would otherwise use every
    core of the node in each embedder. Tracker shards get
    `SHARD_RESTARTS`. A plan with no tracker shards needs no `tracker_params`.
    Raises `PlacementError` instead of waiting forever when an actor stays pending.
    """
    import ray

    if plan.num_shards and tracker_params is None:
        raise ValueError("tracker_params are needed to start tracker shards")
    embedder_cls = ray.remote(embedder_class)
    shard_cls = ray.remote(TrackerShardActor)
    choice = embedder_choice(model, plan)
    embedders = []
    for k in range(plan.num_embedders):
        options: dict[str, Any] = {
            "num_cpus": plan.embedder_num_cpus,
            "num_gpus": plan.embedder_num_gpus,
            **EMBEDDER_RESTARTS,
            **(embedder_options or {}),
        }
        if name_prefix:
            options["name"] = f"{name_prefix}-embedder-{k}"
        embedders.append(
            embedder_cls.options(**options).remote(
                choice, metrics_tags={"index": str(k)}, **(embedder_kwargs or {})
            )
        )
    shards = []
    for k in range(plan.num_shards):
        options = {"num_cpus": plan.shard_num_cpus, **SHARD_RESTARTS}
        if name_prefix:
            options["name"] = f"{name_prefix}-shard-{k}"
        shards.append(
            shard_cls.options(**options).remote(
                dict(tracker_params or {}),
                k,
                plan.num_shards,
                checkpoint_root,
                fsync,
                on_invalid,
            )
        )
    pool = JobActors(plan=plan, embedders=embedders, shards=shards, embedding_dim=None)
    started = wait_until_started(
        {
            **{f"embedder {k}": actor for k, actor in enumerate(embedders)},
            **{f"tracker shard {k}": actor for k, actor in enumerate(shards)},
        },
        start_timeout_s,
        plan.describe(),
    )
    if embedders:
        pool.embedding_dim = int(started["embedder 0"])
    pool.shard_incarnations = [str(started[f"tracker shard {k}"]) for k in range(len(shards))]
    return pool


def warn_if_gpu_without_cuda(gpu_ids: Sequence[Any], cuda_available: bool, device: str) -> bool:
    """Log a warning (and return True) when Ray gave this actor a GPU that torch cannot use:
    a torch build without CUDA, or one newer than the node's driver. With `model.device` "auto"
    the model would otherwise run on the CPU without a word; "cuda" fails when it loads."""
    if not gpu_ids or cuda_available:
        return False
    logger.warning(
        "this actor holds GPU %s but torch sees no CUDA (torch %s built for CUDA %s; check the "
        "image's torch build against the node's driver): model.device=%r %s",
        ",".join(map(str, gpu_ids)),
        *_torch_build(),
        device,
        "fails" if device.startswith("cuda") else "runs on the CPU",
    )
    return True


def _torch_build() -> tuple[str, str]:
    import torch

    return str(torch.__version__), str(torch.version.cuda or "none (CPU build)")


def embedder_choice(model: ModelChoice, plan: ActorPlan) -> ModelChoice:
    """`model` as an embedder of `plan` loads it: a CPU embedder must not pick up a GPU it was
    not given (device "auto" -> "cpu"), and threads 0 means the embedder's CPUs (at least 1)."""
    changes: dict[str, Any] = {}
    if not plan.use_gpu and model.device == "auto":
        changes["device"] = "cpu"
    if model.threads == 0:
        changes["threads"] = max(1, math.floor(plan.embedder_num_cpus + 1e-9))
    return replace(model, **changes)


def wait_until_started(
    actors: Mapping[str, Any], start_timeout_s: float, description: str
) -> dict[str, Any]:
    """Wait for every actor's `ready()`; returns name -> what it returned.

    On a timeout (`PlacementError`, naming the actors still pending) or any error, every actor
    in `actors` is killed before the exception propagates, so nothing is left holding resources.
    """
    import ray

    pending = {actor.ready.remote(): name for name, actor in actors.items()}
    started: dict[str, Any] = {}
    deadline = time.monotonic() + start_timeout_s
    try:
        while pending:
            ready, _ = ray.wait(
                list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic())
            )
            if not ready:
                raise PlacementError(
                    f"{', '.join(sorted(pending.values()))} did not start within "
                    f"{start_timeout_s:g}s ({description}); check `ray status` for pending "
                    "resource demands"
                )
            started[pending.pop(ready[0])] = ray.get(ready[0])
    except BaseException:
        for actor in actors.values():
            ray.kill(actor)
        raise
    return started
