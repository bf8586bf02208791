"""GPU workers fail fast without CUDA: `model.device=cuda` never runs on the CPU, and a GPU actor
whose torch sees no CUDA says so."""

from __future__ import annotations

import logging

import pytest
import torch

from ray_deepsort.pipeline.actors import PlacementError, warn_if_gpu_without_cuda
from ray_deepsort.reid.backends import resolve_device
from ray_deepsort.stream.config import load_config


def test_cuda_without_cuda_fails_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match=r"sees no CUDA"):
            resolve_device(device)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_actor_without_cuda_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ray_deepsort.pipeline"):
        assert not warn_if_gpu_without_cuda([], False, "auto")  # a CPU actor: nothing to say
        assert not warn_if_gpu_without_cuda([0], True, "auto")
        assert not caplog.records
        assert warn_if_gpu_without_cuda([0], False, "auto")
    assert "holds GPU 0 but torch sees no CUDA" in caplog.text
    assert "runs on the CPU" in caplog.text


def test_stream_job_refuses_cuda_embedders_on_a_cpu_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    from ray_deepsort.pipeline import actors
    from ray_deepsort.stream import job as stream_job
    from ray_deepsort.stream.job import StreamJob

    def never(*_: object, **__: object) -> None:
        raise AssertionError("no actor may start")

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    monkeypatch.setattr(actors, "start_actors", never)
    monkeypatch.setattr(stream_job, "check_topic_limits", lambda _: None)  # no broker here
    job = StreamJob(load_config(None, ["model.device=cuda"]))
    with pytest.raises(PlacementError, match=r"model.device is 'cuda' but the embedders run"):
        job.run()
