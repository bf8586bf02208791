"""Appearance-embedding throughput: every backend and model, and the per-crop PIL pipeline.

First, every backend and model (`--backend-models`): MobileNetV2 in torch eager, converted to
OpenVINO in memory and exported to ONNX Runtime; Intel's person-ReID IRs (../shared) in
OpenVINO; the 0267 ONNX in ONNX Runtime. crops/s of `ReIDModel.embed` by batch size, on one
thread and on all cores, with the OpenVINO / torch ratio for MobileNetV2 (same weights).

Then, for each backbone (random weights: speed does not depend on them) at 256x128 input, prints
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
from pathlib import Path

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
    parser.add_argument(
        "--backend-models",
        nargs="*",
        default=list(BACKEND_MODELS),
        help=f"backend/model pairs to time (default all: {', '.join(BACKEND_MODELS)}); "
        "none skips the section",
    )
    parser.add_argument("--skip-peer", action="store_true", help="only the backend section")


OMZ = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "intel-omz"
BACKEND_MODELS = (
    "mobilenetv2/torch",
    "mobilenetv2/openvino",
    "mobilenetv2/openvino-f32",
    "mobilenetv2/onnxruntime",
    "omz-0288/openvino",
    "omz-0287/openvino",
    "omz-0287-int8/openvino",
    "omz-0267/onnxruntime",
)
_OMZ_FILES = {
    "omz-0288": "person-reidentification-retail-0288/FP16/person-reidentification-retail-0288.xml",
    "omz-0287": "person-reidentification-retail-0287/FP16/person-reidentification-retail-0287.xml",
    "omz-0287-int8": "person-reidentification-retail-0287/FP16-INT8/"
    "person-reidentification-retail-0287.xml",
    "omz-0267": "person-reidentification-retail-0267/person-reidentification-retail-0267.onnx",
}


def load_backend_model(key: str, threads: int, workdir: Path) -> object:
    """The ReIDModel of a BACKEND_MODELS key, on the CPU with `threads` threads."""
    import torch

    from ray_deepsort.reid import ReIDModel

    name, backend = key.split("/")
    backend, _, precision = backend.partition("-")  # "openvino-f32": a fixed precision
    precision = precision or "auto"
    if name == "mobilenetv2":
        if backend in ("torch", "openvino"):
            return ReIDModel.mobilenetv2_imagenet(
                device="cpu", backend=backend, threads=threads, precision=precision
            )
        reference = ReIDModel.mobilenetv2_imagenet(device="cpu")
        path = workdir / "mobilenetv2.onnx"
        if not path.exists():
            torch.onnx.export(
                reference.backbone.float(),
                torch.zeros(1, 3, *reference.input_size),
                path,
                dynamo=False,
                input_names=["data"],
                dynamic_axes={"data": {0: "n"}},
            )
        spec = reference.spec
        return ReIDModel.from_file(
            path,
            backend=backend,
            device="cpu",
            threads=threads,
            input_color_order=spec.input_color_order,
            mean=spec.mean,
            std=spec.std,
            crop=spec.crop,
        )
    return ReIDModel.from_file(OMZ / _OMZ_FILES[name], backend=backend, device="cpu",
                               threads=threads, precision=precision)  # fmt: skip


def bench_backends(args: argparse.Namespace, frame: np.ndarray, all_boxes: np.ndarray) -> None:
    """crops/s per backend/model, batch size and thread count; ratios against torch.

    Two figures per cell: `embed` end to end (crop, preprocess, network) and, after the slash,
    the network alone on the same preprocessed crops (what the backend itself changes).
    """
    import os
    import tempfile

    import torch

    keys = [k for k in args.backend_models if k != "none"]
    if not keys:
        return
    missing = [k for k in keys if not k.startswith("mobilenetv2") and not OMZ.is_dir()]
    if missing:
        print(f"skipping {missing}: {OMZ} is not there")
        keys = [k for k in keys if k not in missing]
    thread_counts = sorted({1, os.cpu_count() or 1})
    rates: dict[tuple[str, int, int], float] = {}
    print(
        f"\n{'backend/model':<24} {'threads':>7} "
        + " ".join(f"{'B=' + str(b):>9}" for b in args.batch_sizes)
        + "   (crops/s: embed / network alone)"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for key in keys:
            for threads in thread_counts:
                torch.set_num_threads(threads)
                model = load_backend_model(key, threads, Path(workdir))
                cells = []
                for batch in args.batch_sizes:
                    boxes = all_boxes[:batch]
                    wall, _ = time_calls(
                        lambda m=model, b=boxes: m.embed(frame, b), args.min_time, lambda: None
                    )
                    crops = torch.rand((batch, 3, *model.input_size)) * 255
                    network = model.preprocess(crops)
                    net, _ = time_calls(
                        lambda m=model, x=network: m.raw_features(x), args.min_time, lambda: None
                    )
                    rates[key, threads, batch] = batch / wall
                    rates[f"{key} network", threads, batch] = batch / net
                    cells.append(f"{batch / wall:>6.0f} /{batch / net:>5.0f}")
                print(f"{key:<24} {threads:>7} " + " ".join(cells), flush=True)
    batches = args.batch_sizes
    first = batches[0]
    for threads in thread_counts:
        for other in (
            "mobilenetv2/openvino",
            "mobilenetv2/openvino-f32",
            "mobilenetv2/onnxruntime",
        ):
            for part in ("", " network"):
                reference = {
                    b: rates.get((f"mobilenetv2/torch{part}", threads, b)) for b in batches
                }
                if reference[first] is None or (other + part, threads, first) not in rates:
                    continue
                ratios = ", ".join(
                    f"B={b}: {rates[other + part, threads, b] / reference[b]:.2f}x" for b in batches
                )
                label = "network alone" if part else "embed"
                print(f"{other} / mobilenetv2/torch, {label}, {threads} thread(s): {ratios}")
    if args.threads:
        torch.set_num_threads(args.threads)


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
    bench_backends(args, frame, all_boxes)
    if not args.skip_peer:
        for model_name in args.models:
            bench_model(model_name, args, frame, all_boxes)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
