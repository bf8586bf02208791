"""How well each ReID model separates people on real video, and the gate that follows from it.

    .venv/bin/python benchmarks/appearance_gates.py [--stride 3] [--markdown FILE]

For every shared sequence with frames, ground-truth boxes (scored, pedestrians, visibility >= 0.5
where the file has it) are embedded. Pairs of one person 10–30 frames apart are "same"; pairs of
two people within 30 frames are "different". Per model it prints the ROC AUC of cosine distance,
the mean distances, and the equal-error gate: the distance at which the share of same-person
pairs above it equals the share of different-person pairs below it. That gate, rounded to 0.05,
is the `appearance_threshold` recommended in `ray_deepsort/reid/known_models.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT / ".." / "shared"
OMZ = SHARED / "models" / "intel-omz"
SEQUENCES = (
    SHARED / "data" / "mot15" / "TUD-Campus",
    SHARED / "data" / "mot15" / "TUD-Stadtmitte",
    SHARED / "data" / "mot15" / "KITTI-17",
    SHARED / "data" / "mot16" / "MOT16-09",
)
MODELS = {
    "mobilenetv2-imagenet": None,
    "omz-0288": OMZ
    / "person-reidentification-retail-0288/FP16/person-reidentification-retail-0288.xml",
    "omz-0287": OMZ
    / "person-reidentification-retail-0287/FP16/person-reidentification-retail-0287.xml",
    "omz-0267": OMZ
    / "person-reidentification-retail-0267/person-reidentification-retail-0267.onnx",
}


def load_model(name: str, threads: int):
    from ray_deepsort.reid import ReIDModel

    path = MODELS[name]
    if path is None:
        return ReIDModel.mobilenetv2_imagenet(device="cpu", backend="openvino", threads=threads)
    return ReIDModel.from_file(path, device="cpu", threads=threads)


def ground_truth_crops(seq_dir: Path, stride: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(frame, id) per kept gt box, and the boxes per sampled frame with their images."""
    from ray_deepsort.io.mot import MotSequence

    sequence = MotSequence(seq_dir)
    gt = sequence.ground_truth()
    keep = gt.scored & (gt.visibility >= 0.5)
    per_frame = []
    for frame, image in sequence.frames():
        if image is None or frame % stride:
            continue
        rows = np.flatnonzero(keep & (gt.frame == frame))
        if len(rows):
            per_frame.append((image, gt.xyxy[rows], gt.frame[rows], gt.track_id[rows]))
    return per_frame


def pair_distances(
    features: np.ndarray, frames: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    distance = 1.0 - features @ features.T
    gap = np.abs(frames[:, None] - frames[None, :])
    same_id = ids[:, None] == ids[None, :]
    upper = np.triu(np.ones_like(same_id), k=1)
    same = distance[upper & same_id & (gap >= 10) & (gap <= 30)]
    different = distance[upper & ~same_id & (gap <= 30)]
    return same, different


def auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(a different-person pair is farther than a same-person pair), ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([same, different]))  # ties share their mean rank
    return float((ranks[len(same) :].sum() - len(different) * (len(different) + 1) / 2)
                 / (len(same) * len(different)))  # fmt: skip


def equal_error_gate(same: np.ndarray, different: np.ndarray) -> float:
    grid = np.linspace(0.0, 2.0, 2001)
    cut_same = 1.0 - np.searchsorted(np.sort(same), grid, side="right") / len(same)
    admitted_different = np.searchsorted(np.sort(different), grid, side="right") / len(different)
    return float(grid[np.argmin(np.abs(cut_same - admitted_different))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=3, help="use every N-th frame")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sequences = [s for s in SEQUENCES if s.is_dir()]
    if not sequences:
        print(f"no sequences under {SHARED}", file=sys.stderr)
        return 1
    data = {s.name: ground_truth_crops(s, args.stride) for s in sequences}
    lines = [
        "| model | sequence | AUC | mean distance same / different | equal-error gate |",
        "|---|---|---:|---:|---:|",
    ]
    for name in args.models:
        model = load_model(name, args.threads)
        pooled_same, pooled_different = [], []
        started = time.perf_counter()
        for sequence, per_frame in data.items():
            embedded = model.embed_batch([f[0] for f in per_frame], [f[1] for f in per_frame])
            features = np.concatenate(embedded)
            frames = np.concatenate([f[2] for f in per_frame])
            ids = np.concatenate([f[3] for f in per_frame])
            same, different = pair_distances(features, frames, ids)
            pooled_same.append(same)
            pooled_different.append(different)
            lines.append(
                f"| {name} | {sequence} | {auc(same, different):.3f} | "
                f"{same.mean():.3f} / {different.mean():.3f} | "
                f"{equal_error_gate(same, different):.3f} |"
            )
        same, different = np.concatenate(pooled_same), np.concatenate(pooled_different)
        lines.append(
            f"| **{name}** | all ({len(same)} / {len(different)} pairs) | "
            f"{auc(same, different):.3f} | {same.mean():.3f} / {different.mean():.3f} | "
            f"**{equal_error_gate(same, different):.3f}** |"
        )
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
