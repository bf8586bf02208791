"""Design choices of the tracker, one at a time: gate, filter priors, buffer, embeddings.

    .venv/bin/python benchmarks/ablations.py [--variants default paper-gate ...] [--seeds 0 1 2]

Each variant is the tracker with today's defaults except the settings it names (tracker
parameters, or `KalmanFilter` settings), run on
- the eight MOT15 training sequences, motion only (public detections; ../shared/data/mot15);
- the synthetic long-occlusion scenes (`SceneConfig(seed=N)`), motion only and with oracle
  embeddings (each detection carries the one-hot identity of the person it shows, plus noise;
  false detections random), the ceiling of what any appearance model could add.
Prints IDSW / IDF1 / HOTA / MOTA for MOT15 combined and IDSW / IDF1 for the synthetic scenes,
summed or averaged over seeds. Everything is deterministic: a rerun prints the same numbers.
docs/benchmarks.md quotes this script's output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from ray_deepsort.core import CHI2_95_4DOF, DeepSORTTracker, Detections, KalmanFilter  # noqa: E402
from ray_deepsort.eval.metrics import combine, compute_raw, summarize  # noqa: E402
from ray_deepsort.io.mot import GroundTruth, MotSequence, find_sequences  # noqa: E402
from ray_deepsort.synthetic import SceneConfig, SyntheticScene  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MOT15 = REPO_ROOT / ".." / "shared" / "data" / "mot15"
ORACLE_NOISE = 0.15


@dataclass(frozen=True)
class Variant:
    """Tracker keyword arguments and `KalmanFilter` settings that differ from the defaults."""

    description: str
    tracker: dict[str, Any] = field(default_factory=dict)
    kalman: dict[str, float] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    "default": Variant("today's defaults"),
    "paper-gate": Variant(
        "gate on x, y, aspect, height (paper), chi-square 95 % 4 dof",
        {"gate_position_only": False},
    ),
    "wide-gate": Variant("centre gate at chi-square 99.9 % (13.82)", {"gating_threshold": 13.8155}),
    "no-gate": Variant("no Mahalanobis gate", {"gating_threshold": 1e9}),
    "paper-gate-value": Variant(
        "centre gate with the 4-dof value 9.49", {"gating_threshold": CHI2_95_4DOF}
    ),
    "paper-velocity-prior": Variant(
        "new tracks' velocity std 1.875 heights/s (paper's at 30 fps)",
        kalman={"initial_velocity_std": 1.875},
    ),
    "velocity-prior-3.75": Variant(
        "new tracks' velocity std 3.75 heights/s", kalman={"initial_velocity_std": 3.75}
    ),
    "paper-aspect-noise": Variant(
        "aspect noise 2.5 % process, 25 % measurement (the paper's at aspect 0.4)",
        kalman={"std_weight_aspect": 0.025},
    ),
    "aspect-noise-5": Variant("aspect process noise 5 %", kalman={"std_weight_aspect": 0.05}),
    "buffer-60": Variant("lost_track_buffer 60", {"lost_track_buffer": 60}),
    "buffer-90": Variant("lost_track_buffer 90", {"lost_track_buffer": 90}),
    "no-reid-window": Variant("no long-term re-identification", {"reid_window_seconds": 0.0}),
}


def make_tracker(variant: Variant, frame_rate: float) -> DeepSORTTracker:
    tracker = DeepSORTTracker(frame_rate=frame_rate, **variant.tracker)
    if variant.kalman:
        tracker.kalman_filter = KalmanFilter(frame_rate=tracker.frame_rate, **variant.kalman)
    return tracker


def _track(
    tracker: DeepSORTTracker,
    frames: int,
    detections: Callable[[int], Detections],
    embeddings: Callable[[int, Detections], np.ndarray | None],
) -> dict[int, Detections]:
    """Frame (1-based) -> confirmed detections of the run."""
    results = {}
    for i in range(frames):
        current = detections(i)
        out = tracker.update(current, embeddings=embeddings(i, current))
        results[i + 1] = out[out.tracker_id >= 0]
    return results


def oracle_embeddings(scene: SyntheticScene, i: int, detections: Detections) -> np.ndarray:
    """One-hot identity + N(0, 0.15) per true detection, random for false ones (seeded)."""
    rng = np.random.default_rng([scene.config.seed, 0xE3B, i])
    gt_id = np.asarray(detections.data["gt_id"], np.int64)
    embeddings = rng.normal(0.0, ORACLE_NOISE, (len(detections), scene.num_objects))
    true = np.flatnonzero(gt_id > 0)
    embeddings[true, gt_id[true] - 1] += 1.0
    false = np.flatnonzero(gt_id <= 0)
    embeddings[false] = rng.normal(0.0, 1.0, (len(false), scene.num_objects))
    return embeddings.astype(np.float32)


def run_mot15(variant: Variant, sequences: list[MotSequence]) -> dict[str, Any]:
    raws = []
    empty = Detections.empty()
    for sequence in sequences:
        per_frame = sequence.detections()
        results = _track(
            make_tracker(variant, sequence.info.frame_rate),
            sequence.num_frames,
            lambda i, per_frame=per_frame: per_frame.get(i + 1, empty),
            lambda i, d: None,
        )
        raws.append(compute_raw(sequence.ground_truth(), results, num_frames=sequence.num_frames))
    return summarize(combine(raws))


def run_synthetic(variant: Variant, seed: int, oracle: bool) -> dict[str, Any]:
    scene = SyntheticScene(SceneConfig(seed=seed))
    results = _track(
        make_tracker(variant, scene.fps),
        scene.num_frames,
        scene.detections,
        (lambda i, d: oracle_embeddings(scene, i, d)) if oracle else (lambda i, d: None),
    )
    ground_truth = GroundTruth.from_rows(scene.ground_truth)
    return summarize(compute_raw(ground_truth, results, num_frames=scene.num_frames))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=MOT15, help="MOT15 sequences folder")
    args = parser.parse_args(argv)
    found = find_sequences([args.data])[0] if args.data.is_dir() else []
    sequences = [MotSequence(p) for p in found]
    if not sequences:
        print(f"note: no MOT15 sequences in {args.data}; synthetic scenes only", file=sys.stderr)
    seeds = ", ".join(map(str, args.seeds))
    print(
        f"| variant | MOT15 motion only: IDSW / IDF1 / HOTA / MOTA | synthetic seeds {seeds}: "
        "IDSW motion / oracle | mean IDF1 motion / oracle |"
    )
    print("|---|---|---|---|")
    started = time.monotonic()
    for name in args.variants:
        variant = VARIANTS[name]
        mot = run_mot15(variant, sequences) if sequences else None
        motion = [run_synthetic(variant, seed, oracle=False) for seed in args.seeds]
        oracle = [run_synthetic(variant, seed, oracle=True) for seed in args.seeds]
        mot_cell = (
            "-"
            if mot is None
            else f"{mot['IDSW']} / {mot['IDF1']:.3f} / {mot['HOTA']:.3f} / {mot['MOTA']:.3f}"
        )
        print(
            f"| `{name}`: {variant.description} | {mot_cell} | "
            f"{sum(m['IDSW'] for m in motion)} / {sum(m['IDSW'] for m in oracle)} | "
            f"{np.mean([m['IDF1'] for m in motion]):.3f} / "
            f"{np.mean([m['IDF1'] for m in oracle]):.3f} |",
            flush=True,
        )
    print(f"\n{time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
