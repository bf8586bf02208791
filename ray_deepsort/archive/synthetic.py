"""A synthetic archive on disk: videos with detections files, for tests, benchmarks and demos.

Scenes come from `ray_deepsort.synthetic` (deterministic per seed); each video `NAME.mp4` gets a
detections file next to it in the chosen format, which `ray-deepsort reprocess` finds by itself
(`--detections auto`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ray_deepsort.synthetic import SceneConfig, SyntheticScene

SMALL_SCENE = SceneConfig(
    num_objects=5,
    num_frames=60,
    width=320,
    height=240,
    min_box_height=50.0,
    max_box_height=110.0,
    occluded_walkers=1,
    min_hidden_frames=8,
)


def detection_columns(scene: SyntheticScene) -> dict[str, np.ndarray]:
    """frame (0-based), x1, y1, x2, y2, score, class_id of every detection of the scene."""
    per_frame = [scene.detections(i) for i in range(scene.num_frames)]
    counts = [len(d) for d in per_frame]
    xyxy = np.concatenate([d.xyxy for d in per_frame]).reshape(-1, 4).astype(np.float32)
    return {
        "frame": np.repeat(np.arange(scene.num_frames, dtype=np.int64), counts),
        "x1": xyxy[:, 0],
        "y1": xyxy[:, 1],
        "x2": xyxy[:, 2],
        "y2": xyxy[:, 3],
        "score": np.concatenate([d.confidence_or_ones() for d in per_frame]).astype(np.float32),
        "class_id": np.zeros(len(xyxy), np.int64),
    }


def write_detections(
    columns: dict[str, np.ndarray], path: str | Path, fmt: str | None = None
) -> Path:
    """Write detection columns as Parquet, CSV (0-based frames) or MOT det.txt (1-based)."""
    import pyarrow as pa

    path = Path(path)
    fmt = fmt or {".parquet": "parquet", ".csv": "csv"}.get(path.suffix, "mot")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "mot":
        rows = np.full((len(columns["frame"]), 10), -1.0)
        rows[:, 0] = columns["frame"] + 1
        rows[:, 2] = columns["x1"]
        rows[:, 3] = columns["y1"]
        rows[:, 4] = columns["x2"] - columns["x1"]
        rows[:, 5] = columns["y2"] - columns["y1"]
        rows[:, 6] = columns["score"]
        np.savetxt(path, rows, fmt="%d,%d,%.3f,%.3f,%.3f,%.3f,%.4f,%d,%d,%d")
        return path
    table = pa.table({name: np.asarray(values) for name, values in columns.items()})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    return path


def write_synthetic_archive(
    folder: str | Path,
    num_videos: int,
    config: SceneConfig = SMALL_SCENE,
    detections_format: str = "parquet",
    first_seed: int = 100,
    prefix: str = "cam",
) -> list[Path]:
    """`num_videos` videos PREFIXk.mp4 (scene seed first_seed + k) with detections files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extension = {"parquet": ".parquet", "csv": ".csv", "mot": ".txt"}[detections_format]
    videos = []
    for k in range(num_videos):
        scene = SyntheticScene(replace(config, seed=first_seed + k))
        video = scene.write_video(folder / f"{prefix}{k}.mp4")
        write_detections(detection_columns(scene), video.with_suffix(extension), detections_format)
        videos.append(video)
    return videos
