"""Archive reprocessing throughput: frames/s with 1 and 2 video workers, and where time goes.

    .venv/bin/python benchmarks/archive_throughput.py --videos 4 --frames 150 \
        --markdown /tmp/archive.md --json /tmp/archive.json

Writes N synthetic videos (with Parquet detections) once into --workdir, then for each ReID
setting (the bundled MobileNetV2 and motion-only) and each worker count runs the archive job on
a private local Ray and reports wall-clock frames/s plus the share of worker time spent in
decode, ReID (embedder compute for this video's crops), association (DeepSORT update) and
writing (Parquet). The in-process baseline runs the same videos through one DeepSORTTracker +
ReIDModel per video, frame by frame, in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

# Results of the standalone baseline must not depend on how many threads torch grabs.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _make_inputs(folder: Path, videos: int, frames: int, width: int, height: int, objects: int):
    from ray_deepsort.archive.synthetic import SMALL_SCENE, write_synthetic_archive

    scene = replace(
        SMALL_SCENE,
        num_frames=frames,
        width=width,
        height=height,
        num_objects=objects,
        min_box_height=0.2 * height,
        max_box_height=0.5 * height,
    )
    marker = folder / f".done-{videos}-{frames}-{width}x{height}-{objects}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_synthetic_archive(folder, videos, scene, "parquet", first_seed=900)
        marker.touch()
    return sorted(folder.glob("*.mp4"))


def _baseline(videos: list[Path], model_name: str, input_size: tuple[int, int]) -> dict[str, Any]:
    """Frame-by-frame in-process tracking of every video, one after the other (no Ray)."""
    import cv2
    import torch

    from ray_deepsort.archive.driver import default_tracker_params
    from ray_deepsort.core import DeepSORTTracker, Detections
    from ray_deepsort.io.detections import read_detection_table

    torch.set_num_threads(1)
    model = None
    if model_name != "none":
        from ray_deepsort.reid import ReIDModel

        model = ReIDModel.mobilenetv2_imagenet(device="cpu", input_size=input_size)
    frames = 0
    started = time.perf_counter()
    for video in videos:
        table = read_detection_table(video.with_suffix(".parquet"), "parquet")
        capture = cv2.VideoCapture(str(video))
        tracker = DeepSORTTracker(
            model, **{**default_tracker_params(), "frame_rate": capture.get(cv2.CAP_PROP_FPS)}
        )
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frame = table.for_frame(index)
            tracker.update(
                Detections(xyxy=frame.xyxy, confidence=frame.confidence, class_id=frame.class_id),
                frame=image,
                frame_index=index,
            )
            index += 1
        frames += index
        capture.release()
    elapsed = time.perf_counter() - started
    return {"frames": frames, "elapsed_s": elapsed, "fps": frames / elapsed}


def _archive_run(
    inputs: Path,
    output: Path,
    model: str,
    input_size: tuple[int, int],
    workers: int,
    embedders: int,
) -> dict[str, Any]:
    from ray_deepsort.archive.driver import ArchiveConfig, ArchiveJob

    shutil.rmtree(output, ignore_errors=True)
    config = ArchiveConfig(
        inputs=[str(inputs)],
        output=str(output),
        model=model,
        input_size=input_size,
        workers=workers,
        embedders=embedders,
        progress="none",
    )
    summary = ArchiveJob(config).run()
    if summary.failed:
        raise RuntimeError(summary.render())
    steady = max(summary.elapsed_s - summary.startup_s, 1e-9)
    return {
        "workers": workers,
        "embedders": embedders if model != "none" else 0,
        "frames": summary.frames,
        "elapsed_s": summary.elapsed_s,
        "startup_s": summary.startup_s,
        "fps": summary.frames_per_second,
        "fps_after_startup": summary.frames / steady,
        "stage_seconds": summary.stage_seconds,
        "stage_share": summary.stage_share,
        "embed_batches": summary.embed_batches,
        "actors": summary.actors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument(
        "--motion-frames",
        type=int,
        default=600,
        help="frames per video for motion-only runs (they are ~100x faster than with ReID)",
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument(
        "--layouts",
        default="1x1,2x1,2x2",
        help="video workers x ReID embedders to compare (embedders are ignored without ReID)",
    )
    parser.add_argument("--models", default="mobilenetv2_100,none")
    parser.add_argument("--input-size", default="256x128")
    parser.add_argument("--workdir", default="/tmp/archive-bench")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()

    import ray

    workdir = Path(args.workdir)
    inputs = {
        "reid": workdir / "inputs",
        "none": workdir / f"inputs-{args.motion_frames}",
    }
    frames = {"reid": args.frames, "none": args.motion_frames}
    videos = {
        kind: _make_inputs(folder, args.videos, frames[kind], args.width, args.height, args.objects)
        for kind, folder in inputs.items()
    }
    layouts = [tuple(int(v) for v in layout.split("x")) for layout in args.layouts.split(",")]
    input_size = tuple(int(v) for v in args.input_size.lower().split("x"))
    # One logical CPU per worker and per embedder, whatever the machine has: the point is to
    # compare layouts on the same physical cores.
    ray.init(
        address="local",
        num_cpus=max(w + e for w, e in layouts),
        include_dashboard=False,
        logging_level="WARNING",
    )
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": os.getloadavg(),
        },
        "videos": args.videos,
        "frames_per_video": frames,
        "resolution": f"{args.width}x{args.height}",
        "objects": args.objects,
        "runs": [],
        "baseline": {},
    }
    try:
        for model in args.models.split(","):
            kind = "none" if model == "none" else "reid"
            done: set[tuple[int, int]] = set()
            for workers, layout_embedders in layouts:
                embedders = 0 if model == "none" else layout_embedders
                if (workers, embedders) in done:
                    continue
                done.add((workers, embedders))
                run = _archive_run(
                    inputs[kind],
                    workdir / f"out-{model}-{workers}x{embedders}",
                    model,
                    input_size,
                    workers,
                    embedders,
                )
                run["model"] = model
                results["runs"].append(run)
                print(json.dumps(run, indent=1))
            if not args.no_baseline:
                results["baseline"][model] = _baseline(videos[kind], model, input_size)
                print(model, "baseline", results["baseline"][model])
    finally:
        ray.shutdown()
    results["machine"]["load_average_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    table = _markdown(results)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        f"{results['videos']} videos x {results['frames_per_video']['reid']} frames with ReID "
        f"({results['frames_per_video']['none']} motion-only), "
        f"{results['resolution']}, {results['objects']} people; {results['machine']['cpus']} CPUs "
        f"(load average {results['machine']['load_average_at_start'][0]:.1f} at start, "
        f"{results['machine']['load_average_at_end'][0]:.1f} at end)",
        "",
        "| ReID | video workers | embedders | frames/s | frames/s after startup | wall s | "
        "decode | ReID | association | write | ReID requests/batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        share = run["stage_share"]
        batches = run["embed_batches"].get("requests_per_batch", 0.0)
        lines.append(
            f"| {run['model']} | {run['workers']} | {run['embedders']} | {run['fps']:.1f} | "
            f"{run['fps_after_startup']:.1f} | {run['elapsed_s']:.1f} | "
            f"{100 * share['decode']:.0f}% | {100 * share['reid']:.0f}% | "
            f"{100 * share['association']:.0f}% | {100 * share['write']:.0f}% | {batches:.1f} |"
        )
    for model, baseline in results["baseline"].items():
        lines.append(
            f"| {model} | in-process, 1 thread | | {baseline['fps']:.1f} | "
            f"{baseline['fps']:.1f} | {baseline['elapsed_s']:.1f} | | | | | |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
