"""Finding archive inputs: video files and MOTChallenge sequences, their keys and fingerprints.

An input is one video file (anything OpenCV's VideoCapture reads) or one MOTChallenge sequence
folder (`seqinfo.ini`, `det/det.txt`, frames in `img1/` or `SEQ.mp4`). Arguments may be files,
folders (searched recursively; a sequence folder is taken whole), glob patterns, or `@list.txt`
(one argument per line).

Each input gets a `key`: a short, file-system safe name used as its Parquet partition
(`source_key=KEY`), as its stream id and in the manifest. Keys come from the file or folder
name; a name already taken by another path gets a hash of its absolute path appended. Keys of
inputs seen in an earlier run are reused from the manifest, so they never change between runs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_deepsort.io.errors import InputError
from ray_deepsort.io.mot import DETECTIONS_FILE, SEQINFO_FILE, is_sequence_dir
from ray_deepsort.io.video import FrameSource, open_sequence, open_video

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
        ".m2ts", ".wmv", ".flv", ".3gp", ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg",
        ".mjpg", ".dav", ".asf", ".ogv",
    }
)  # fmt: skip
DETECTION_EXTENSIONS = (".parquet", ".csv", ".txt")
AUTO_DETECTION_PATTERNS = (
    "{dir}/{stem}.parquet",
    "{dir}/{stem}.csv",
    "{dir}/{stem}.det.txt",
    "{dir}/{stem}.txt",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_KEY_LENGTH = 80


@dataclass(frozen=True)
class ArchiveInput:
    """One unit of work: a video file or a MOTChallenge sequence folder."""

    path: str  # absolute
    kind: str  # "video" or "mot"
    size: int = 0  # bytes of the frames (video file, or image folder / sequence video)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def stem(self) -> str:
        return Path(self.path).name if self.kind == "mot" else Path(self.path).stem


@dataclass
class DetectionSource:
    """Where an input's detections come from: a file (with its format) or the detector plugin."""

    kind: str  # "file" or "detector"
    path: str = ""
    format: str = ""  # "parquet", "csv" or "mot"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "format": self.format}


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _is_sequence(path: Path) -> bool:
    return is_sequence_dir(path)


def _walk(folder: Path) -> Iterable[ArchiveInput]:
    """Videos and sequences below `folder`, sorted; a sequence folder is not searched further."""
    if _is_sequence(folder):
        yield _make_input(folder, "mot")
        return
    for root, dirs, files in os.walk(folder, followlinks=True):
        root_path = Path(root)
        sequences = sorted(d for d in dirs if _is_sequence(root_path / d))
        dirs[:] = sorted(d for d in dirs if d not in sequences and not d.startswith("."))
        for name in sequences:
            yield _make_input(root_path / name, "mot")
        for name in sorted(files):
            path = root_path / name
            if _is_video(path) and not name.startswith("."):
                # A video inside a sequence folder belongs to the sequence (walk never gets there).
                yield _make_input(path, "video")


def _sequence_size(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        if entry.is_file() and _is_video(Path(entry.path)):
            total += entry.stat().st_size
    image_dir = folder / "img1"
    if image_dir.is_dir():
        total += sum(e.stat().st_size for e in os.scandir(image_dir) if e.is_file())
    return total


def _make_input(path: Path, kind: str) -> ArchiveInput:
    absolute = path.resolve()
    size = _sequence_size(absolute) if kind == "mot" else absolute.stat().st_size
    return ArchiveInput(path=str(absolute), kind=kind, size=size)


def _expand_arguments(arguments: Iterable[str]) -> Iterable[str]:
    for argument in arguments:
        if argument.startswith("@"):
            list_file = Path(argument[1:])
            if not list_file.is_file():
                raise FileNotFoundError(f"input list {list_file} not found")
            base = list_file.resolve().parent
            for line in list_file.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line if os.path.isabs(line) or glob.has_magic(line) else str(base / line)
        else:
            yield argument


def discover_inputs(arguments: Iterable[str]) -> tuple[list[ArchiveInput], list[tuple[str, str]]]:
    """(inputs in a stable order without duplicates, [(argument, problem)] for bad arguments).

    A named file is taken as a video whatever its extension (the user said so); in folders only
    files with a video extension are. A missing path is reported, not fatal: the others run.
    """
    found: dict[str, ArchiveInput] = {}
    problems: list[tuple[str, str]] = []
    for argument in _expand_arguments(arguments):
        if glob.has_magic(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                problems.append((argument, "pattern matches no file"))
            candidates = [Path(m) for m in matches]
        else:
            candidates = [Path(argument)]
        for candidate in candidates:
            if candidate.is_dir():
                items = list(_walk(candidate))
                if not items and not glob.has_magic(argument):
                    problems.append((argument, "folder holds no video or MOTChallenge sequence"))
            elif candidate.is_file():
                items = [_make_input(candidate, "video")]
            else:
                problems.append((str(candidate), "no such file or folder"))
                continue
            for item in items:
                found.setdefault(item.path, item)
    return list(found.values()), problems


# ------------------------------------------------------------------------------ keys


def safe_name(text: str) -> str:
    """`text` reduced to [A-Za-z0-9._-] (other runs become "_"), never empty or hidden."""
    name = _UNSAFE.sub("_", text).strip("_") or "input"
    if name.startswith("."):
        name = "_" + name[1:]
    return name[:MAX_KEY_LENGTH]


def path_hash(path: str, length: int = 8) -> str:
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:length]


def assign_keys(inputs: Iterable[ArchiveInput], known: Mapping[str, str]) -> dict[str, str]:
    """path -> key. Paths in `known` (from the manifest) keep theirs; new ones get their name,
    or name-HASH when that name is already used by another path."""
    keys: dict[str, str] = {}
    taken: set[str] = set(known.values())
    new: list[ArchiveInput] = []
    for item in inputs:
        if item.path in known:
            keys[item.path] = known[item.path]
        else:
            new.append(item)
    for item in sorted(new, key=lambda i: i.path):
        key = safe_name(item.stem)
        if key in taken:
            key = f"{key[: MAX_KEY_LENGTH - 9]}-{path_hash(item.path)}"
        taken.add(key)
        keys[item.path] = key
    return keys


# ------------------------------------------------------------------------------ detections


def detection_format(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".csv"):
        return "csv"
    return "mot"


def resolve_detections(item: ArchiveInput, pattern: str) -> DetectionSource:
    """The detections file of `item` for a `--detections` pattern ("auto" tries the usual names).

    Placeholders: {dir} (the video's folder), {stem} (file name without extension), {name}
    (file name), {path} (the whole path). MOTChallenge sequences use `det/det.txt` unless an
    explicit pattern is given. Raises `InputError` when no file exists.
    """
    source = Path(item.path)
    if item.kind == "mot" and pattern == "auto":
        det = source / DETECTIONS_FILE
        if not det.is_file():
            raise InputError(f"detections file not found: {det}")
        return DetectionSource("file", str(det), "mot")
    fields = {
        "dir": str(source.parent),
        "stem": item.stem,
        "name": source.name,
        "path": str(source),
    }
    patterns = AUTO_DETECTION_PATTERNS if pattern == "auto" else (pattern,)
    tried = []
    for candidate_pattern in patterns:
        try:
            candidate = candidate_pattern.format(**fields)
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"detections pattern {candidate_pattern!r} has an unknown placeholder {error}; "
                "known: {dir} {stem} {name} {path}"
            ) from None
        tried.append(candidate)
        if Path(candidate).is_file():
            return DetectionSource(
                "file", str(Path(candidate).resolve()), detection_format(candidate)
            )
    raise InputError(f"detections file not found (looked for {', '.join(tried)})")


# ------------------------------------------------------------------------------ fingerprints


def _file_fingerprint(path: Path, mode: str) -> dict[str, Any]:
    stat = path.stat()
    entry: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if mode == "sha256":
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        entry = {"size": stat.st_size, "sha256": digest.hexdigest()}
    return entry


@dataclass
class Fingerprint:
    """What an input's content looked like: size and mtime (or SHA-256) of each of its files."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in sorted(self.files.items())}


def fingerprint(item: ArchiveInput, detections: DetectionSource | None, mode: str) -> Fingerprint:
    """Fingerprint of the frames and the detections file of `item`.

    `mode`: "stat" (size + modification time, instant) or "sha256" (reads every byte; survives
    copies that reset mtimes). For a sequence folder: `seqinfo.ini`, videos in it, and the
    image folder as (number of files, total size, newest mtime) in "stat" mode.
    """
    if mode not in ("stat", "sha256"):
        raise ValueError(f"fingerprint mode must be 'stat' or 'sha256', got {mode!r}")
    path = Path(item.path)
    files: dict[str, dict[str, Any]] = {}
    if item.kind == "video":
        files["video"] = _file_fingerprint(path, mode)
    else:
        files[SEQINFO_FILE] = _file_fingerprint(path / SEQINFO_FILE, mode)
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file() and _is_video(Path(entry.path)):
                files[entry.name] = _file_fingerprint(Path(entry.path), mode)
        image_dir = path / "img1"
        if image_dir.is_dir():
            stats = [e.stat() for e in os.scandir(image_dir) if e.is_file()]
            files["img1"] = {
                "count": len(stats),
                "size": sum(s.st_size for s in stats),
                "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
            }
    if detections is not None and detections.kind == "file":
        files["detections"] = {
            "path": detections.path,
            **_file_fingerprint(Path(detections.path), mode),
        }
    return Fingerprint(files)


def open_source(item: ArchiveInput, need_pixels: bool) -> FrameSource:
    """The frames of an input: a MOTChallenge sequence or a video."""
    if item.kind == "mot":
        return open_sequence(item.path, need_pixels)
    return open_video(item.path, need_pixels)
