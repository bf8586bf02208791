"""Archive inputs: discovery, stable keys, detections file resolution, fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ray_deepsort.archive.inputs import (
    ArchiveInput,
    InputError,
    assign_keys,
    discover_inputs,
    fingerprint,
    resolve_detections,
    safe_name,
)
from ray_deepsort.io.detections import read_detection_table


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _sequence(folder: Path) -> Path:
    _touch(folder / "seqinfo.ini", b"[Sequence]\nname=S\nframeRate=25\nseqLength=3\n")
    _touch(folder / "det" / "det.txt", b"1,-1,1,2,3,4,0.9,-1,-1,-1\n")
    _touch(folder / f"{folder.name}.mp4")  # the sequence's own video: not a separate input
    return folder


def test_discovery_walks_folders_and_takes_sequences_whole(tmp_path: Path) -> None:
    _touch(tmp_path / "site" / "a.mp4")
    _touch(tmp_path / "site" / "night" / "b.MKV")
    _touch(tmp_path / "site" / "notes.txt")
    _touch(tmp_path / "site" / ".hidden.mp4")
    _sequence(tmp_path / "site" / "MOT-02")
    items, problems = discover_inputs([str(tmp_path / "site")])
    found = {(Path(i.path).relative_to(tmp_path).as_posix(), i.kind) for i in items}
    assert found == {
        ("site/a.mp4", "video"),
        ("site/night/b.MKV", "video"),
        ("site/MOT-02", "mot"),
    }
    assert problems == []


def test_globs_lists_and_explicit_files_without_duplicates(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.mp4")
    b = _touch(tmp_path / "b.avi")
    odd = _touch(tmp_path / "c.recording")  # named explicitly: taken whatever its extension
    listing = _touch(tmp_path / "inputs.txt", b"# archive\nb.avi\nc.recording\n")
    items, problems = discover_inputs(
        [str(tmp_path / "*.mp4"), f"@{listing}", str(a), str(tmp_path / "missing.mp4")]
    )
    assert [Path(i.path) for i in items] == [a.resolve(), b.resolve(), odd.resolve()]
    assert problems == [(str(tmp_path / "missing.mp4"), "no such file or folder")]
    assert items[0].size == 1


def test_keys_are_readable_unique_and_stable(tmp_path: Path) -> None:
    first = ArchiveInput(str(tmp_path / "north" / "cam 1.mp4"), "video")
    second = ArchiveInput(str(tmp_path / "south" / "cam 1.mp4"), "video")
    keys = assign_keys([first, second], known={})
    assert keys[first.path] == "cam_1"
    assert keys[second.path].startswith("cam_1-") and len(keys[second.path]) == len("cam_1-") + 8
    # A later run that only sees the second file keeps its key (it is in the manifest).
    again = assign_keys([second], known={second.path: keys[second.path]})
    assert again == {second.path: keys[second.path]}
    # A new file never takes a key the manifest already holds for another path.
    third = ArchiveInput(str(tmp_path / "east" / "cam_1.mp4"), "video")
    assert assign_keys([third], known={first.path: "cam_1"})[third.path] != "cam_1"


def test_safe_name() -> None:
    assert safe_name("Front door/2024-05-01 08:00") == "Front_door_2024-05-01_08_00"
    assert safe_name("...") == "_.."
    assert safe_name("") == "input"


def test_detections_resolution(tmp_path: Path) -> None:
    video = ArchiveInput(str(_touch(tmp_path / "cam.mp4")), "video")
    with pytest.raises(InputError, match="detections file not found"):
        resolve_detections(video, "auto")
    _touch(tmp_path / "cam.txt")
    assert resolve_detections(video, "auto").format == "mot"
    _touch(tmp_path / "cam.csv")  # earlier in the auto order than .txt
    assert resolve_detections(video, "auto").path == str(tmp_path / "cam.csv")
    det = _touch(tmp_path / "dets" / "cam.parquet")
    chosen = resolve_detections(video, str(tmp_path / "dets" / "{stem}.parquet"))
    assert (chosen.path, chosen.format) == (str(det), "parquet")
    with pytest.raises(ValueError, match="unknown placeholder"):
        resolve_detections(video, "{folder}/{stem}.csv")
    sequence = ArchiveInput(str(_sequence(tmp_path / "SEQ")), "mot")
    assert resolve_detections(sequence, "auto").path == str(tmp_path / "SEQ" / "det" / "det.txt")


def test_fingerprint_follows_content_and_detections(tmp_path: Path) -> None:
    video_path = _touch(tmp_path / "cam.mp4", b"abc")
    det_path = _touch(tmp_path / "cam.csv", b"frame,x1,y1,x2,y2\n")
    video = ArchiveInput(str(video_path), "video")
    detections = resolve_detections(video, "auto")
    before = fingerprint(video, detections, "stat").to_dict()
    assert before == fingerprint(video, detections, "stat").to_dict()
    os.utime(det_path, ns=(1, 1))
    assert fingerprint(video, detections, "stat").to_dict() != before
    hashed = fingerprint(video, detections, "sha256").to_dict()
    assert "mtime_ns" not in hashed["video"] and len(hashed["video"]["sha256"]) == 64
    os.utime(video_path, ns=(5, 5))  # a copy that resets mtimes: same hash
    assert fingerprint(video, detections, "sha256").to_dict() == hashed
    video_path.write_bytes(b"abd")
    assert fingerprint(video, detections, "sha256").to_dict() != hashed
    with pytest.raises(ValueError):
        fingerprint(video, detections, "md5")


def test_detection_files_in_every_format(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text(
        "Frame,x,y,w,h,Score,class,stream\n"
        "2,10,20,5,10,0.9,1,left\n"
        "0,0,0,4,4,0.2,0,right\n"
        "2,30,20,5,10,0.8,0,right\n"
    )
    table = read_detection_table(csv, "csv")
    assert table.streams == ["left", "right"]
    frame = table.for_frame(2)
    np.testing.assert_allclose(frame.xyxy, [[10, 20, 15, 30], [30, 20, 35, 30]])
    assert frame.stream.tolist() == ["left", "right"]  # file order kept within a frame
    assert frame.class_id.tolist() == [1, 0]
    assert len(table.for_frame(1).xyxy) == 0
    assert len(read_detection_table(csv, "csv", min_confidence=0.5)) == 2
    shifted = read_detection_table(csv, "csv", frame_base=0)
    assert shifted.last_frame == 2

    mot = tmp_path / "det.txt"
    mot.write_text("1,-1,1,2,3,4,0.5,-1,-1,-1\n3,-1,5,6,7,8,0.7,-1,-1,-1\n")
    table = read_detection_table(mot, "mot")
    assert table.frame.tolist() == [0, 2] and table.stream is None
    np.testing.assert_allclose(table.for_frame(2).xyxy, [[5, 6, 12, 14]])

    bad = tmp_path / "bad.csv"
    bad.write_text("time,x1,y1,x2,y2\n0,1,2,3,4\n")
    with pytest.raises(InputError, match="no frame column"):
        read_detection_table(bad, "csv")
    bad.write_text("frame,x1,y1,x2,y2\n0.5,1,2,3,4\n")
    with pytest.raises(InputError, match="whole numbers"):
        read_detection_table(bad, "csv")
    bad.write_text("frame,x1\n0,1\n")
    with pytest.raises(InputError, match="no box columns"):
        read_detection_table(bad, "csv")
    with pytest.raises(InputError, match="not found"):
        read_detection_table(tmp_path / "nope.parquet", "parquet")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read detections"):
        read_detection_table(garbage, "parquet")
