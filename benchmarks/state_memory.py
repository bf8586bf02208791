"""Bytes of tracker state per stream and per track (issue #5, bounded memory).

Runs one stream of the synthetic scene through `DeepSORTTracker` with stand-in embeddings of
several sizes (128-d as in the paper, 512-d, 1280-d as mobilenetv2_100 gives) and both gallery
dtypes, and reports after the run: live tracks, bytes held in memory (`tracker.nbytes`), bytes of
the checkpoint (`state_dict()` through np.savez, as the stream job writes it), each per track,
and the gallery's bound `max_tracks * gallery_budget * dim * itemsize` (the store never grows
past `max_tracks` slots; the track columns, about 0.6 KiB per slot, come on top). The peak over
the run is reported too (the store grows by doubling, then shrinks).

Validation (issue 16): the cost of `validate_state` on the final state_dict, per state and per
track, next to the median `update()` of the last 50 frames at about the same track count (both
in µs; `validate_share` = validation / one update; the update gets precomputed embeddings, as in
the stream job's shards, so the share leaves out the ReID model). Set OPENBLAS_NUM_THREADS=1 to
measure both on one core, as a shard actor with one CPU runs them.

Fingerprint (format 3, float32 galleries): for random unit rows (Gaussian, and ReLU-like with
half the entries 0) of each size, the share of single-row edits the fingerprint cannot tell
from rounding (one row negated; two neighbouring rows swapped), and the largest difference
seen between the BLAS fingerprint and a sequential float32 sum, as a share of the tolerance
(which is a proven bound, so it must stay below 1).

    .venv/bin/python benchmarks/state_memory.py --json runs/state_memory.json
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ray_deepsort.core import DeepSORTTracker
from ray_deepsort.core.state import fingerprint_tolerance, gallery_fingerprint, validate_state
from ray_deepsort.stream.publish import identity_embeddings
from ray_deepsort.synthetic import SceneConfig, SyntheticScene


def checkpoint_bytes(tracker: DeepSORTTracker) -> int:
    buffer = io.BytesIO()
    np.savez(buffer, **tracker.state_dict())
    return buffer.tell()


def validation_us(tracker: DeepSORTTracker, repeats: int = 20) -> float:
    """Median µs of validating the tracker's state_dict (what `load_state_dict` adds)."""
    state = tracker.state_dict()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        validate_state(state, tracker.gallery_budget)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def measure(
    scene: SyntheticScene, dim: int, dtype: str, budget: int, max_tracks: int
) -> dict[str, float]:
    tracker = DeepSORTTracker(gallery_budget=budget, gallery_dtype=dtype, max_tracks=max_tracks)
    peak = 0
    update_s = []
    for i in range(scene.num_frames):
        detections = scene.detections(i)
        vectors = identity_embeddings(detections.data["gt_id"], dim, 0, i)
        start = time.perf_counter()
        tracker.update(detections, embeddings=vectors, frame_index=i)
        update_s.append(time.perf_counter() - start)
        peak = max(peak, tracker.nbytes)
    update_us = float(np.median(update_s[-50:])) * 1e6
    validate_us = validation_us(tracker)
    tracks = max(len(tracker.tracks), 1)
    itemsize = np.dtype(dtype).itemsize
    saved = checkpoint_bytes(tracker)
    return {
        "dim": dim,
        "gallery_dtype": dtype,
        "tracks": len(tracker.tracks),
        "capacity": tracker.tracks.capacity,
        "memory_kib": round(tracker.nbytes / 1024, 1),
        "peak_memory_kib": round(peak / 1024, 1),
        "memory_kib_per_track": round(tracker.nbytes / tracks / 1024, 1),
        "checkpoint_kib": round(saved / 1024, 1),
        "checkpoint_kib_per_track": round(saved / tracks / 1024, 1),
        "gallery_bound_mib": round(max_tracks * budget * dim * itemsize / 2**20, 1),
        "validate_us": round(validate_us, 1),
        "validate_us_per_track": round(validate_us / tracks, 2),
        "update_us": round(update_us, 1),
        "validate_share": round(validate_us / update_us, 3),
    }


def fingerprint_misses(dim: int, kind: str, rows: int = 20000) -> dict[str, float]:
    rng = np.random.default_rng(dim)
    features = rng.standard_normal((rows, dim))
    if kind == "relu":
        features = np.maximum(features, 0.0)
    features = (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)
    tolerance = fingerprint_tolerance(dim)
    fingerprint = gallery_fingerprint(features)
    probe = gallery_fingerprint(np.eye(dim, dtype=np.float32)).astype(np.float32)
    sequential = np.cumsum(features * probe, axis=1, dtype=np.float32)[:, -1]
    return {
        "dim": dim,
        "rows": kind,
        "tolerance": float(f"{tolerance:.3g}"),
        "negation_missed_pct": round(100 * float(np.mean(np.abs(2 * fingerprint) <= tolerance)), 3),
        "swap_missed_pct": round(
            100 * float(np.mean(np.abs(fingerprint[:-1] - fingerprint[1:]) <= tolerance)), 3
        ),
        "order_difference_share": round(
            float(np.abs(fingerprint - sequential).max()) / tolerance, 4
        ),
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    header = list(rows[0])
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[k]) for k in header))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--max-tracks", type=int, default=1000)
    parser.add_argument("--dims", default="128,512,1280")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    scene = SyntheticScene(SceneConfig(num_frames=args.frames, num_objects=args.objects))
    rows = [
        measure(scene, int(dim), dtype, args.budget, args.max_tracks)
        for dim in args.dims.split(",")
        for dtype in ("float32", "float16")
    ]
    print_rows(rows)
    for dim in {row["dim"] for row in rows}:
        full, half = (
            next(r for r in rows if r["dim"] == dim and r["gallery_dtype"] == t)
            for t in ("float32", "float16")
        )
        print(
            f"{dim}-d: float16 / float32 memory = "
            f"{half['memory_kib'] / full['memory_kib']:.2f}, checkpoint = "
            f"{half['checkpoint_kib'] / full['checkpoint_kib']:.2f}"
        )
    fingerprint = [
        fingerprint_misses(int(dim), kind)
        for dim in args.dims.split(",")
        for kind in ("gauss", "relu")
    ]
    print()
    print_rows(fingerprint)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        out = {"rows": rows, "fingerprint": fingerprint, "args": vars(args)}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
