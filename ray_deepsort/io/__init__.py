"""Reading and writing the files the tracker meets: MOTChallenge sequences, videos, detections.

Depends on `core` only. `stream`, `archive` and `eval` import their file formats from here, so
each format is parsed in one place.
"""

from ray_deepsort.io.errors import InputError

__all__ = ["InputError"]
