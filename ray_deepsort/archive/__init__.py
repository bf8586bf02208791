"""Offline reprocessing of recorded video with the stream job's actors, tracker and Parquet sink.

`ray-deepsort reprocess` (or `jobs/reprocess_archive.py`) tracks every input video or
MOTChallenge sequence with one Ray task per input, shared (coalescing) ReID embedder actors and
optional detector-plugin actors; results go to the stream job's Parquet schema, partitioned by
`source_key`. A manifest makes re-runs skip finished inputs. `ray-deepsort render` draws the
tracks of one input onto its video. See docs/archive.md.

Names are imported on first use, so the CLI can import `ray_deepsort.archive.cli` cheaply.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArchiveConfig": "ray_deepsort.archive.driver",
    "ArchiveConfigError": "ray_deepsort.archive.driver",
    "ArchiveJob": "ray_deepsort.archive.driver",
    "ArchiveSummary": "ray_deepsort.archive.driver",
    "run_archive": "ray_deepsort.archive.driver",
    "ArchiveInput": "ray_deepsort.archive.inputs",
    "InputError": "ray_deepsort.archive.inputs",
    "discover_inputs": "ray_deepsort.archive.inputs",
    "Manifest": "ray_deepsort.archive.output",
    "ManifestEntry": "ray_deepsort.archive.output",
    "read_dataset": "ray_deepsort.archive.output",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ray_deepsort.archive' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
