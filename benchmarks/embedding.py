"""Appearance-embedding throughput: batched crops on the device vs. the per-crop PIL pipeline.

For each backbone (random weights: speed does not depend on them) at 256x128 input, prints
crops/s of `ReIDModel.embed` by batch size, and separately the crop + preprocess stage (uint8
upload, aspect widening, roi_align, normalisation) that feeds it. Then it times, in the same
run, the per-crop pipeline of Roboflow trackers 2.0.2rc0's ReIDModel (numpy slice -> PIL ->
timm eval transform: resize 256 + centre crop 224 -> one forward pass per crop) and prints ratios.

    .venv/bin/python benchmarks/embedding.py [--models mobilenetv2_100 resnet50]
        [--batch-sizes 1 8 32 128] [--min-time 1.0] [--peer-crops 16] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "resnet50"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds of timed calls per measurement"
    )
    parser.add_argument(
        "--peer-crops", type=int, default=16, help="crops timed through the per-crop pipeline"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--frame-size", nargs=2, type=int, default=[1080, 1920], metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)


def make_frame_and_boxes(
    height: int, width: int, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A textured BGR frame and pedestrian-like boxes (some crossing the frame edge)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    frame = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    box_height = rng.uniform(60, 400, count)
    box_width = box_height * rng.uniform(0.3, 0.5, count)
    x1 = rng.uniform(-0.1 * width, width - 20, count)
    y1 = rng.uniform(-0.1 * height, height - 40, count)
    boxes = np.stack([x1, y1, x1 + box_width, y1 + box_height], axis=1).astype(np.float32)
    return frame, boxes


def time_calls(
    call: Callable[[], object], min_time: float, synchronize: Callable[[], None]
) -> tuple[float, float]:
    """Median (wall, CPU) seconds per call, after one warm-up call, over >= `min_time` of calls.

    CPU seconds (all threads of this process) stay meaningful when other processes share the
    cores; wall seconds are the throughput a caller sees.
    """
    call()
    synchronize()
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while not walls or time.perf_counter() - started < min_time:
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def peer_pipeline(
    model_name: str, device: object
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """trackers 2.0.2rc0 `ReIDModel.extract_features`: one PIL transform + forward per crop."""
    import timm
    import torch
    from timm.data import create_transform, resolve_data_config
    from torchvision.transforms import Compose, ToPILImage

    backbone = timm.create_model(model_name, pretrained=False, num_classes=0).eval().to(device)
    transform = Compose(
        [ToPILImage(), create_transform(**resolve_data_config(backbone.pretrained_cfg))]
    )

    def extract(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        features = []
        with torch.inference_mode():
            for x1, y1, x2, y2 in boxes.astype(int):  # the per-box loop being measured
                crop = frame[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)]
                tensor = transform(crop).unsqueeze(0).to(device)
                features.append(backbone(tensor).squeeze(0).cpu().numpy())
        return np.stack(features)

    return extract


def bench_model(
    model_name: str, args: argparse.Namespace, frame: np.ndarray, all_boxes: np.ndarray
) -> None:
    """Print one table: embed and crop+preprocess rates by batch size, then the peer ratio."""
    import torch

    from ray_deepsort.reid import ReIDModel
    from ray_deepsort.reid.crops import aspect_boxes, crop_boxes, frames_to_tensor, sample_region

    torch.manual_seed(args.seed)
    model = ReIDModel.from_timm(
        model_name, pretrained=False, input_size=(256, 128), device=args.device
    )
    device = model.device

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def crop_and_preprocess(boxes: np.ndarray) -> torch.Tensor:
        """What `embed` does before the forward pass, through the same functions."""
        with torch.inference_mode():
            rois = aspect_boxes(boxes, model.input_size)
            region = sample_region(rois, *frame.shape[:2])
            frames = frames_to_tensor([frame], device, region)
            rois -= np.array([region[2], region[0], region[2], region[0]], dtype=np.float64)
            crops = crop_boxes(frames, np.zeros(len(boxes)), rois, model.input_size)
            return model.preprocess(crops)

    print(
        f"\n{model}\n{'model':<16} {'device':<7} {'batch':>5} {'crops/s':>9} {'crops/CPU-s':>12} "
        f"{'ms/batch':>9} {'crop+prep crops/s':>18} {'crop+prep ms':>13} {'share':>6}"
    )
    embed_rates: dict[int, tuple[float, float]] = {}
    for batch in args.batch_sizes:
        boxes = all_boxes[:batch]
        embed_s, embed_cpu = time_calls(
            lambda b=boxes: model.embed(frame, b), args.min_time, synchronize
        )
        prep_s, _ = time_calls(
            lambda b=boxes: crop_and_preprocess(b), args.min_time / 4, synchronize
        )
        embed_rates[batch] = (batch / embed_s, batch / max(embed_cpu, 1e-9))
        print(
            f"{model_name:<16} {device.type:<7} {batch:>5} {batch / embed_s:>9.1f} "
            f"{embed_rates[batch][1]:>12.1f} {1000 * embed_s:>9.1f} {batch / prep_s:>18.1f} "
            f"{1000 * prep_s:>13.2f} {prep_s / embed_s:>6.1%}"
        )

    peer_boxes = all_boxes[: args.peer_crops]
    extract = peer_pipeline(model_name, device)
    peer_s, peer_cpu = time_calls(lambda: extract(frame, peer_boxes), args.min_time, synchronize)
    peer_rate, peer_cpu_rate = len(peer_boxes) / peer_s, len(peer_boxes) / max(peer_cpu, 1e-9)
    print(
        f"{model_name:<16} {device.type:<7} peer per-crop PIL pipeline (224x224, "
        f"{len(peer_boxes)} crops): {peer_rate:.1f} crops/s, {peer_cpu_rate:.1f} crops/CPU-s"
    )
    for label, index, peer in (("wall", 0, peer_rate), ("CPU", 1, peer_cpu_rate)):
        ratios = ", ".join(f"B={b}: {r[index] / peer:.2f}x" for b, r in embed_rates.items())
        print(f"{'':<16} ours / peer ({label} time): {ratios}")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = args.frame_size
    frame, all_boxes = make_frame_and_boxes(height, width, max(args.batch_sizes), args.seed)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"frame {width}x{height}, input 256x128, min {args.min_time:.1f} s per point"
    )
    for model_name in args.models:
        bench_model(model_name, args, frame, all_boxes)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
