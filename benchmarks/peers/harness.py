"""Shared benchmark plumbing (project venv side): peer venv, running trackers, metrics, tables.

Our tracker runs in this process; peers run in `.peer-venv/` through `run_peer.py`. Both read
detections with `run_peer.detections_by_frame` and frames with `run_peer.iter_frames`, so every
tracker sees byte-identical input, and every result file is scored by `ray_deepsort.eval`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS thread for every tracker, ours and the peers' (subprocesses inherit it), like their one
# torch thread: idle OpenBLAS threads spin, which added half again to our CPU time per frame.
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
from peers.run_peer import (  # noqa: E402
    detections_by_frame,
    frame_source,
    iter_frames,
    read_det_rows,
    read_seqinfo,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_VENV = REPO_ROOT / ".peer-venv"
RUN_PEER = Path(__file__).resolve().parent / "run_peer.py"
# The peers' own releases (installed with --no-deps into the peer venv, shadowing the project's
# trackers 2.x), plus trackers' two small declared dependencies the project venv lacks.
PEER_REQUIREMENTS = (
    "trackers==2.0.2rc0",
    "deep-sort-realtime==1.3.2",
    "setuptools<81",
    "aiofiles>=24.1.0",
    "validators>=0.34.0",
)
PTH_NAME = "zz_project_venv_site_packages.pth"
MARKER_NAME = "ray-deepsort-peer-venv.json"

LABELS = {
    "ours-appearance": "ours DeepSORT (MobileNetV2)",
    "ours-motion": "ours, appearance disabled",
    "trackers-deepsort": "trackers 2.0.2rc0 DeepSORT",
    "trackers-sort": "trackers 2.0.2rc0 SORT",
    "dsr-deepsort": "deep_sort_realtime 1.3.2",
}


# ----------------------------------------------------------------------------- peer venv


def project_site_packages() -> Path:
    """site-packages of the running (project) venv: torch, timm, numpy, supervision come from it."""
    if sys.prefix == sys.base_prefix:
        raise RuntimeError("run the benchmarks with the project venv's python (.venv/bin/python)")
    return Path(sysconfig.get_paths()["purelib"])


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _peer_site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / version / "site-packages"


def _marker(site: Path) -> dict[str, Any]:
    return {"requirements": list(PEER_REQUIREMENTS), "project_site_packages": str(site)}


def ensure_peer_venv(venv: Path = PEER_VENV, quiet: bool = False) -> Path:
    """Create (first run) or reuse the peer venv; return its python.

    Mechanism: a venv of the project venv's interpreter; the peers' releases are pip-installed
    into it with --no-deps *before* a `.pth` line appends the project venv's site-packages to
    sys.path (so pip cannot see, and skip, the project's copies). The venv's own site-packages come
    first on sys.path, so trackers 2.0.2rc0 shadows the project's trackers 2.x, while torch,
    torchvision, timm, numpy, scipy, opencv and supervision are shared, not re-installed.
    """
    site = project_site_packages()
    marker_path = venv / MARKER_NAME
    if marker_path.exists() and json.loads(marker_path.read_text()) == _marker(site):
        return _venv_python(venv)
    if venv.exists():
        shutil.rmtree(venv)
    build = venv.with_name(f"{venv.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    log = print if not quiet else (lambda *a, **k: None)
    log(f"creating peer venv {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(build)], check=True)
    subprocess.run(
        [
            str(_venv_python(build)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            *PEER_REQUIREMENTS,
        ],
        check=True,
    )
    (_peer_site_packages(build) / PTH_NAME).write_text(f"{site}\n")
    (build / MARKER_NAME).write_text(json.dumps(_marker(site), indent=2))
    try:
        build.rename(venv)
    except OSError:  # another benchmark process won the race: use its venv
        shutil.rmtree(build, ignore_errors=True)
    versions = peer_versions(_venv_python(venv))
    if versions["trackers"] != "2.0.2rc0" or not versions["trackers_path"].startswith(str(venv)):
        raise RuntimeError(f"peer venv does not resolve trackers 2.0.2rc0 from itself: {versions}")
    return _venv_python(venv)


def peer_versions(python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(python), str(RUN_PEER), "--versions"], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- running


@dataclass
class Run:
    """One tracker on one sequence: where its results are, how long its updates took."""

    method: str
    sequence: str
    seq_dir: Path
    results: Path
    frames: int = 0
    update_seconds: float = 0.0  # wall time in the tracker's update calls
    cpu_seconds: float = 0.0  # process CPU time (all threads) in the same calls
    detections: int = 0
    metrics: dict[str, float | int] = field(default_factory=dict)
    raw: Any = None

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.update_seconds / max(self.frames, 1)

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000.0 * self.cpu_seconds / max(self.frames, 1)


def run_peers(
    python: Path,
    jobs: Sequence[tuple[str, Path]],
    out_dir: Path,
    max_frames: int | None = None,
    threads: int | None = None,
) -> list[Run]:
    """Run (tracker, seq_dir) jobs in one peer-venv process, in order; one Run per job."""
    if not jobs:
        return []
    specs, runs = [], []
    for tracker, seq_dir in jobs:
        name = read_seqinfo(seq_dir)["name"]
        run = Run(tracker, name, seq_dir, out_dir / f"{tracker}__{name}.txt")
        specs.append(
            {
                "seq_dir": str(seq_dir),
                "tracker": tracker,
                "results": str(run.results),
                "stats": str(run.results.with_suffix(".json")),
                "max_frames": max_frames,
                "threads": threads,
            }
        )
        runs.append(run)
    jobs_file = out_dir / f"peer-jobs-{len(list(out_dir.glob('peer-jobs-*')))}.json"
    jobs_file.write_text(json.dumps(specs, indent=2))
    process = subprocess.run(
        [str(python), str(RUN_PEER), str(jobs_file)], capture_output=True, text=True
    )
    if process.returncode != 0:
        sys.stderr.write(process.stderr[-6000:])
        raise RuntimeError(f"peer runner failed with exit status {process.returncode}")
    for run in runs:
        stats = json.loads(run.results.with_suffix(".json").read_text())
        run.frames, run.update_seconds = stats["frames"], stats["update_seconds"]
        run.cpu_seconds = stats["cpu_seconds"]
        run.detections = stats["detections"]
    return runs


def set_threads(threads: int | None) -> int:
    """Pin torch's intra-op threads in this process (peers get the same number); return it."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_mobilenetv2(device: str = "cpu", input_size: tuple[int, int] | None = None) -> Any:
    """Our ReID model with the same MobileNetV2 ImageNet trunk the peers get, warmed up.

    `input_size` (height, width) overrides the model's default crop size.
    """
    from ray_deepsort.reid import ReIDModel

    options = {} if input_size is None else {"input_size": tuple(input_size)}
    reid = ReIDModel.mobilenetv2_imagenet(device=device, **options)
    reid.embed(np.zeros((240, 320, 3), np.uint8), np.array([[10.0, 10.0, 60.0, 130.0]]))
    return reid


def run_ours(
    seq_dir: Path,
    out_dir: Path,
    reid_model: Any | None,
    method: str,
    max_frames: int | None = None,
    tracker_kwargs: dict[str, Any] | None = None,
) -> Run:
    """Our DeepSORTTracker (defaults, seqinfo frame rate) over a sequence; times `update` only."""
    from ray_deepsort.core import DeepSORTTracker, Detections
    from ray_deepsort.io.mot import write_results

    info = read_seqinfo(seq_dir)
    num_frames = min(info["seq_length"], max_frames or info["seq_length"])
    per_frame = detections_by_frame(
        read_det_rows(seq_dir / "det" / "det.txt"), num_frames, info["width"], info["height"]
    )
    tracker = DeepSORTTracker(
        reid_model=reid_model, frame_rate=info["frame_rate"], **(tracker_kwargs or {})
    )
    use_frames = reid_model is not None
    if use_frames and frame_source(seq_dir, info) is None:
        raise FileNotFoundError(f"{seq_dir} has no frames for appearance")
    images: Iterable[np.ndarray | None] = (
        iter_frames(seq_dir, info, num_frames) if use_frames else [None] * num_frames
    )
    results: dict[int, Any] = {}
    seconds = cpu_seconds = 0.0
    for index, ((xyxy, conf), image) in enumerate(zip(per_frame, images, strict=True), start=1):
        detections = Detections(
            xyxy=xyxy.astype(np.float32), confidence=conf, class_id=np.zeros(len(xyxy), np.int64)
        )
        start, start_cpu = time.perf_counter(), time.process_time()
        results[index] = tracker.update(detections, frame=image, frame_index=index)
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - start_cpu
    run = Run(method, info["name"], seq_dir, out_dir / f"{method}__{info['name']}.txt")
    write_results(run.results, results)
    run.frames, run.update_seconds, run.cpu_seconds = len(results), seconds, cpu_seconds
    run.detections = int(sum(len(d) for d in results.values()))
    return run


def evaluate(run: Run) -> Run:
    """HOTA/IDF1/MOTA/IDSW of a run's result file (gt rows with consider == 0 are ignored)."""
    from ray_deepsort.eval.metrics import compute_raw, summarize

    run.raw = compute_raw(run.seq_dir / "gt" / "gt.txt", run.results, num_frames=run.frames)
    run.metrics = summarize(run.raw)
    return run


def combined(runs: Sequence[Run], method: str, name: str) -> Run:
    """Several sequences of one method as one row: TrackEval-combined metrics, total time."""
    from ray_deepsort.eval.metrics import combine, summarize

    total = Run(method, name, Path(), Path())
    total.frames = sum(r.frames for r in runs)
    total.update_seconds = sum(r.update_seconds for r in runs)
    total.cpu_seconds = sum(r.cpu_seconds for r in runs)
    total.detections = sum(r.detections for r in runs)
    total.raw = combine([r.raw for r in runs])
    total.metrics = summarize(total.raw)
    return total


# ----------------------------------------------------------------------------- reporting


def markdown_table(
    runs: Sequence[Run], reference: dict[str, str] | None = None, labels: dict[str, str] = LABELS
) -> str:
    """Markdown table of runs; `reference` maps a method to the method its time is divided by.

    "time vs ours" is the row's ms/frame divided by the reference's (wall, then CPU time):
    5.0× means the row needs five times our time per frame.
    """
    header = "| tracker | IDSW | IDF1 | HOTA | MOTA | ms/frame | CPU ms/frame | time vs ours |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_method = {r.method: r for r in runs}
    for run in runs:
        m = run.metrics
        ratio = ""
        ref = by_method.get((reference or {}).get(run.method, ""))
        if ref is not None and ref.ms_per_frame > 0 and ref.cpu_ms_per_frame > 0:
            ratio = (
                f"{run.ms_per_frame / ref.ms_per_frame:.1f}× / "
                f"{run.cpu_ms_per_frame / ref.cpu_ms_per_frame:.1f}×"
            )
        lines.append(
            f"| {labels.get(run.method, run.method)} | {m['IDSW']} | {m['IDF1']:.3f} | "
            f"{m['HOTA']:.3f} | {m['MOTA']:.3f} | {run.ms_per_frame:.1f} | "
            f"{run.cpu_ms_per_frame:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def machine_line() -> str:
    """CPU count and load now: other processes share this machine's cores."""
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1/5/15 min), python {sys.version.split()[0]}"
    )


def source_line() -> str:
    """The commit the benchmark ran on, and whether the working tree had changes on top."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return f"git {out.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        return "git unknown"


def work_dir(path: Path | None, prefix: str) -> Path:
    """The given folder (created) or a fresh temporary one."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=prefix))
