"""Association cost per frame with precomputed embeddings: ours vs. nwojke's DeepSORT.

The peer is `deep_sort_realtime`'s copy of nwojke/deep_sort (one Python object per track, same
algorithm, same gallery budget), fed the same boxes and embeddings in the same run. Embeddings are
given, so this times filtering + gating + cascade + galleries, not the CNN.

    .venv/bin/python benchmarks/association.py [--tracks 10 50 200] [--dim 128 1280]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

# One BLAS thread for both trackers, as a tracker process should run: with more, idle OpenBLAS
# threads spin on a small machine and the peer's per-track numpy calls take several times longer.
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from ray_deepsort.core import DeepSORTTracker, Detections  # noqa: E402


def make_scene(tracks: int, dim: int, frames: int, seed: int = 0):
    """Objects drifting on a large canvas with noisy boxes and noisy, identity-stable features."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 4000, (tracks, 2))
    velocity = rng.normal(0, 2, (tracks, 2))
    size = rng.uniform([20, 50], [60, 160], (tracks, 2))
    identity = rng.normal(size=(tracks, dim)).astype(np.float32)
    scene = []
    for f in range(frames):
        centre = start + f * velocity + rng.normal(0, 1, (tracks, 2))
        xyxy = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        feats = identity + rng.normal(0, 0.3, identity.shape).astype(np.float32)
        scene.append((xyxy.astype(np.float32), feats))
    return scene


def time_ours(scene, warmup: int) -> float:
    tracker = DeepSORTTracker(appearance_threshold=0.7, appearance_weight=0.5)
    n = len(scene[0][0])
    confidence, class_id = np.full(n, 0.9, np.float32), np.zeros(n, np.int64)
    times = []
    for i, (xyxy, feats) in enumerate(scene):
        start = time.perf_counter()
        # Building the input container is part of the per-frame cost, as for the peer.
        detections = Detections(xyxy=xyxy, confidence=confidence, class_id=class_id)
        tracker.update(detections, embeddings=feats, frame_index=i)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def time_nwojke(scene, warmup: int) -> float:
    from deep_sort_realtime.deep_sort import nn_matching
    from deep_sort_realtime.deep_sort.detection import Detection
    from deep_sort_realtime.deep_sort.tracker import Tracker

    metric = nn_matching.NearestNeighborDistanceMetric("cosine", 0.7, budget=100)
    tracker = Tracker(metric, max_iou_distance=0.7, max_age=30, n_init=3)
    times = []
    for i, (xyxy, feats) in enumerate(scene):
        start = time.perf_counter()
        # Building its Detection objects is part of its per-frame cost, as for ours.
        tlwh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        detections = [Detection(b, 0.9, f, "0") for b, f in zip(tlwh, feats, strict=True)]
        tracker.predict()
        tracker.update(detections)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--dim", type=int, nargs="+", default=[128, 1280])
    parser.add_argument("--frames", type=int, default=220, help="frames per run")
    parser.add_argument(
        "--warmup", type=int, default=120, help="frames before timing (>100 fills galleries)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip deep_sort_realtime")
    args = parser.parse_args()

    runners: dict[str, Callable] = {"ours": time_ours}
    if not args.no_peer:
        runners["nwojke (deep_sort_realtime)"] = time_nwojke
    threads = os.environ["OPENBLAS_NUM_THREADS"]
    print(
        f"median ms/frame over frames {args.warmup}..{args.frames} (galleries full), "
        f"OPENBLAS_NUM_THREADS={threads}"
    )
    print(f"{'tracks':>6} {'dim':>5} " + " ".join(f"{name:>28}" for name in runners) + "   ratio")
    for dim in args.dim:
        for tracks in args.tracks:
            scene = make_scene(tracks, dim, args.frames)
            results = {name: run(scene, args.warmup) for name, run in runners.items()}
            ratio = ""
            if len(results) == 2:
                ours, peer = results.values()
                ratio = f"{peer / ours:6.1f}x faster"
            cells = " ".join(f"{ms:28.3f}" for ms in results.values())
            print(f"{tracks:>6} {dim:>5} {cells}   {ratio}", flush=True)


if __name__ == "__main__":
    main()
