"""How the mutation report sorts survivors: message text, import time, equivalent, behaviour."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def _mutation() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("mutation")


def test_survivors_are_sorted_by_what_a_test_could_see() -> None:
    kind = _mutation().survivor_kind
    reshape = ["-    a = x.reshape(-1, 1, 4)", "+    a = x.reshape(-2, 1, 4)"]
    assert kind("ray_deepsort.core.boxes.x_iou_matrix__mutmut_13", reshape) == "equivalent"
    later = ["-    b = x.reshape(1, -1, 4)", "+    b = x.reshape(1, -2, 4)"]
    assert kind("ray_deepsort.core.boxes.x_iou_matrix__mutmut_29", later) == "equivalent"
    dropped = ["-    b = x.reshape(1, -1, 4)", "+    b = x.reshape(-1, 4)"]
    assert kind("ray_deepsort.core.boxes.x_iou_matrix__mutmut_20", dropped) == "behaviour"
    text = ['-    raise ValueError("bad box")', '+    raise ValueError("XXbad boxXX")']
    assert kind("ray_deepsort.core.boxes.x_f__mutmut_1", text) == "message text"
    imported = ["-    return a", "+    return b"]
    assert kind("ray_deepsort.core.parameters.x__kind__mutmut_3", imported) == "import time"
